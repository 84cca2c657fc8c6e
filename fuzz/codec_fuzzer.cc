// libFuzzer target: see fuzz/entries.h for what it checks. Built and run by scripts/fuzz.
#include <cstdio>
#include <cstdlib>

#include "entries.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const mlink::Status st = mlink::fuzz::CheckCodecInput(data, size);
  if (!st.ok()) {
    std::fprintf(stderr, "invariant broken: %s\n", st.ToString().c_str());
    std::abort();
  }
  return 0;
}
