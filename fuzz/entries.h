// The checks behind the libFuzzer targets, shared by the fuzzers (fuzz/*_fuzzer.cc, built with
// clang by scripts/fuzz) and by the normal test suite, which replays every input kept under
// fuzz/corpus/ and fuzz/regressions/ through the same functions (tests/fuzz/).
//
// Bad input is the expected case: a decode or config error is a clean outcome. These return an
// error only when an invariant breaks (an exception escaping, a decoded frame that does not
// encode back to the same bytes, an error that does not name its file, ...). Memory errors and
// undefined behaviour are caught by the sanitizers the fuzzers are built with.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mlink/common/status.h"

namespace mlink::fuzz {

// One federation frame through protocol::Decode (every message kind; the type is in the header).
// Invariants: a frame that decodes re-encodes to exactly the same bytes and AnnouncedFrameSize
// agrees with its size; a refused frame maps to a reason code other than kInternal.
Status CheckCodecInput(const uint8_t* data, std::size_t size);

// YAML text through cloud::ParseCloudOptions / edge::ParseEdgeOptions. Invariants: an error is
// kInvalidArgument and names the config; accepted options satisfy the loader's cross-field rules.
Status CheckCloudOptionsInput(const uint8_t* data, std::size_t size);
Status CheckEdgeOptionsInput(const uint8_t* data, std::size_t size);

}  // namespace mlink::fuzz
