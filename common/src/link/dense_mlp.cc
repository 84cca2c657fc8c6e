#include "link/dense_mlp.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <thread>

namespace mlink::link::internal {

#define MLINK_INLINE inline __attribute__((always_inline))

namespace {

constexpr int kBlockRows = 256;  // a block's activations of one link: (din + hidden + dout) KiB
constexpr int kLanes = 32;       // rows computed together: four 8-float vectors, four FMA chains

// GCC/Clang vector extensions: 8 floats, lowered to one AVX register or two SSE registers.
typedef float V8 __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));

MLINK_INLINE V8 Load(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
MLINK_INLINE void Store(float* p, V8 v) { std::memcpy(p, &v, sizeof v); }
MLINK_INLINE V8 Splat(float x) { return V8{} + x; }  // one broadcast instruction
MLINK_INLINE V8 Max(V8 a, V8 b) { return a > b ? a : b; }
MLINK_INLINE V8 Min(V8 a, V8 b) { return a < b ? a : b; }

// expf (Cephes polynomial, relative error ~2e-7 on the clamped range; exp(x) for x < -87.3
// comes out as 2^-126 instead of a denormal or 0).
MLINK_INLINE V8 Exp(V8 x) {
  x = Min(Max(x, Splat(-87.3f)), Splat(88.3f));
  const V8 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  V8 r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  V8 p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const V8i bits = (__builtin_convertvector(n, V8i) + 127) << 23;
  return p * (V8)bits;  // the same bits as floats
}

// out[j][r] = (relu)(b[j] + sum_k in[k][r] w[k][j]) for r in [0, R); in is [kin][R], out
// [kout][R], R a multiple of kLanes.
MLINK_INLINE void Layer(const float* in, int kin, const float* w, const float* b, int kout, int R, bool relu,
                        float* out) {
  for (int r0 = 0; r0 < R; r0 += kLanes) {
    for (int j = 0; j < kout; ++j) {
      V8 a[4];
      for (auto& v : a) v = Splat(b[j]);
      for (int k = 0; k < kin; ++k) {
        const V8 wk = Splat(w[k * kout + j]);
        const float* src = in + static_cast<std::size_t>(k) * R + r0;
        for (int q = 0; q < 4; ++q) a[q] += wk * Load(src + 8 * q);
      }
      float* dst = out + static_cast<std::size_t>(j) * R + r0;
      for (int q = 0; q < 4; ++q) Store(dst + 8 * q, relu ? Max(a[q], Splat(0)) : a[q]);
    }
  }
}

// Softmax over the d rows of z [d][R], per column.
MLINK_INLINE void SoftmaxColumns(float* z, int d, int R) {
  for (int r0 = 0; r0 < R; r0 += 8) {
    V8 mx = Load(z + r0);
    for (int o = 1; o < d; ++o) mx = Max(mx, Load(z + static_cast<std::size_t>(o) * R + r0));
    V8 sum = Splat(0);
    for (int o = 0; o < d; ++o) {
      float* zo = z + static_cast<std::size_t>(o) * R + r0;
      const V8 e = Exp(Load(zo) - mx);
      Store(zo, e);
      sum += e;
    }
    const V8 inv = 1.0f / sum;
    for (int o = 0; o < d; ++o) {
      float* zo = z + static_cast<std::size_t>(o) * R + r0;
      Store(zo, Load(zo) * inv);
    }
  }
}

// Sigmoid of count floats (a multiple of 8).
MLINK_INLINE void Sigmoid(float* z, std::size_t count) {
  for (std::size_t i = 0; i < count; i += 8) Store(z + i, 1.0f / (1.0f + Exp(-Load(z + i))));
}

// Writes the 8 x 8 tile t (t[i] = component i of 8 consecutive rows) as 8 rows of 8 floats at
// dst, dst + stride, ...: the standard unpack / shuffle / 128-bit permute transpose.
MLINK_INLINE void StoreTransposed8(const V8* t, float* dst, std::size_t stride) {
  const V8i lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
  const V8i q0 = {0, 1, 8, 9, 4, 5, 12, 13}, q1 = {2, 3, 10, 11, 6, 7, 14, 15};
  const V8i h0 = {0, 1, 2, 3, 8, 9, 10, 11}, h1 = {4, 5, 6, 7, 12, 13, 14, 15};
  V8 u[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    u[i] = __builtin_shuffle(t[i], t[i + 1], lo);
    u[i + 1] = __builtin_shuffle(t[i], t[i + 1], hi);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = __builtin_shuffle(u[i], u[i + 2], q0);
    s[i + 1] = __builtin_shuffle(u[i], u[i + 2], q1);
    s[i + 2] = __builtin_shuffle(u[i + 1], u[i + 3], q0);
    s[i + 3] = __builtin_shuffle(u[i + 1], u[i + 3], q1);
  }
  for (int i = 0; i < 4; ++i) {
    Store(dst + i * stride, __builtin_shuffle(s[i], s[i + 4], h0));
    Store(dst + (i + 4) * stride, __builtin_shuffle(s[i], s[i + 4], h1));
  }
}

// x row-major [rows][din] -> xt [din][R], zero beyond `rows` (R = rows rounded up to kLanes).
MLINK_INLINE void TransposeInBody(const float* x, int rows, int din, float* xt) {
  const int R = (rows + kLanes - 1) / kLanes * kLanes;
  for (int k = 0; k < din; ++k) {
    float* row = xt + static_cast<std::size_t>(k) * R;
    for (int r = 0; r < rows; ++r) row[r] = x[static_cast<std::size_t>(r) * din + k];
    for (int r = rows; r < R; ++r) row[r] = 0;
  }
}

// One block of `rows` rows (xt as TransposeIn leaves it) through one link into out
// [rows][dout]. Scratch: ht [hidden][R], zt [dout][R].
MLINK_INLINE void MlpBlockBody(const DenseMlp& m, const float* xt, int rows, float* ht, float* zt, float* out) {
  const int R = (rows + kLanes - 1) / kLanes * kLanes;
  Layer(xt, m.din, m.w1.data(), m.b1.data(), m.hidden, R, /*relu=*/true, ht);
  Layer(ht, m.hidden, m.w2.data(), m.b2.data(), m.dout, R, /*relu=*/false, zt);
  if (m.task == TaskKind::kSingleLabel) {
    SoftmaxColumns(zt, m.dout, R);
  } else if (m.task == TaskKind::kMultiLabel) {
    Sigmoid(zt, static_cast<std::size_t>(m.dout) * R);
  }
  // Back to row-major: 8 x 8 tiles, then the leftover components and rows one by one.
  const int d8 = m.dout / 8 * 8, r8 = rows / 8 * 8;
  const std::size_t stride = static_cast<std::size_t>(m.dout);
  for (int r = 0; r < r8; r += 8) {
    for (int o = 0; o < d8; o += 8) {
      V8 t[8];
      for (int i = 0; i < 8; ++i) t[i] = Load(zt + static_cast<std::size_t>(o + i) * R + r);
      StoreTransposed8(t, out + r * stride + o, stride);
    }
    for (int rr = r; rr < r + 8; ++rr) {
      for (int o = d8; o < m.dout; ++o) out[rr * stride + o] = zt[static_cast<std::size_t>(o) * R + rr];
    }
  }
  for (int r = r8; r < rows; ++r) {
    for (int o = 0; o < m.dout; ++o) out[r * stride + o] = zt[static_cast<std::size_t>(o) * R + r];
  }
}

struct Kernels {
  void (*transpose_in)(const float* x, int rows, int din, float* xt);
  void (*block)(const DenseMlp& m, const float* xt, int rows, float* ht, float* zt, float* out);
};

void TransposeInGeneric(const float* x, int rows, int din, float* xt) { TransposeInBody(x, rows, din, xt); }
void MlpBlockGeneric(const DenseMlp& m, const float* xt, int rows, float* ht, float* zt, float* out) {
  MlpBlockBody(m, xt, rows, ht, zt, out);
}

// The same kernels built for AVX2 + FMA (8 lanes, fused multiply-add), chosen at run time so
// that the build itself stays portable.
#if defined(__x86_64__) && defined(__GNUC__)
#define MLINK_HAVE_AVX2_KERNEL 1
__attribute__((target("avx2,fma"))) void TransposeInAvx2(const float* x, int rows, int din, float* xt) {
  TransposeInBody(x, rows, din, xt);
}
__attribute__((target("avx2,fma"))) void MlpBlockAvx2(const DenseMlp& m, const float* xt, int rows, float* ht,
                                                      float* zt, float* out) {
  MlpBlockBody(m, xt, rows, ht, zt, out);
}
#endif

Kernels PickKernels() {
#ifdef MLINK_HAVE_AVX2_KERNEL
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {TransposeInAvx2, MlpBlockAvx2};
#endif
  return {TransposeInGeneric, MlpBlockGeneric};
}

// Rows [begin, end) of links [l0, l1), block by block: each input block is read once per link
// while it is still in cache. Outputs must already have their size.
void RunRange(const std::vector<const DenseMlp*>& links, const std::vector<const Column*>& inputs,
              const std::vector<Column*>& outputs, std::size_t l0, std::size_t l1, std::size_t begin,
              std::size_t end) {
  int din = 0, hidden = 0, dout = 0;
  for (std::size_t l = l0; l < l1; ++l) {
    din = std::max(din, links[l]->din);
    hidden = std::max(hidden, links[l]->hidden);
    dout = std::max(dout, links[l]->dout);
  }
  static const Kernels kernels = PickKernels();
  std::vector<float> xt(static_cast<std::size_t>(din) * kBlockRows), ht(static_cast<std::size_t>(hidden) * kBlockRows),
      zt(static_cast<std::size_t>(dout) * kBlockRows);
  for (std::size_t start = begin; start < end; start += kBlockRows) {
    const int rows = static_cast<int>(std::min<std::size_t>(kBlockRows, end - start));
    const Column* transposed = nullptr;  // links that read one column share its transposed block
    for (std::size_t l = l0; l < l1; ++l) {
      const DenseMlp& m = *links[l];
      if (inputs[l] != transposed) {
        kernels.transpose_in(inputs[l]->values.data() + start * m.din, rows, m.din, xt.data());
        transposed = inputs[l];
      }
      kernels.block(m, xt.data(), rows, ht.data(), zt.data(), outputs[l]->values.data() + start * m.dout);
    }
  }
}

}  // namespace

Result<DenseMlp> DenseMlp::FromParams(const LinkSpec& spec, const FlatParams& params) {
  if (spec.source.kind != FormatKind::kVector || spec.target.kind != FormatKind::kVector) {
    return Status::InvalidArgument("dense MLP path: vec2vec link expected, got " + spec.ArchName());
  }
  MLINK_RETURN_IF_ERROR(params.Validate());
  DenseMlp m;
  m.din = spec.source.dim;
  m.hidden = spec.HiddenUnits();
  m.dout = spec.target.dim;
  m.task = spec.task;
  struct Slot {
    const char* name;
    std::vector<int64_t> shape;
    std::vector<float>* dst;
  };
  const Slot slots[] = {{"mlp_w1", {m.din, m.hidden}, &m.w1},
                        {"mlp_b1", {1, m.hidden}, &m.b1},
                        {"mlp_w2", {m.hidden, m.dout}, &m.w2},
                        {"mlp_b2", {1, m.dout}, &m.b2}};
  if (params.names.size() != std::size(slots)) {
    return Status::InvalidArgument("dense MLP path: expected 4 parameter tensors, got " +
                                   std::to_string(params.names.size()));
  }
  std::size_t offset = 0;
  for (std::size_t i = 0; i < params.names.size(); ++i) {
    if (params.names[i] != slots[i].name || params.shapes[i] != slots[i].shape) {
      return Status::InvalidArgument("dense MLP path: parameter " + std::to_string(i) + " is '" + params.names[i] +
                                     "', expected '" + slots[i].name + "' of this link's shape");
    }
    std::size_t count = static_cast<std::size_t>(slots[i].shape[0] * slots[i].shape[1]);
    slots[i].dst->assign(params.data.begin() + offset, params.data.begin() + offset + count);
    offset += count;
  }
  return m;
}

Status RunDenseMlps(const std::vector<const DenseMlp*>& links, const std::vector<const Column*>& inputs,
                    const std::vector<Column*>& outputs, int threads) {
  if (links.size() != inputs.size() || links.size() != outputs.size()) {
    return Status::InvalidArgument("dense MLP path: one input and one output per link expected");
  }
  if (links.empty()) return Status::Ok();
  const std::size_t L = links.size();
  const std::size_t n = inputs[0]->rows();
  for (std::size_t l = 0; l < L; ++l) {
    if (inputs[l]->kind != FormatKind::kVector || inputs[l]->dim != links[l]->din || inputs[l]->rows() != n) {
      return Status::InvalidArgument("dense MLP path: input " + std::to_string(l) +
                                     " is not a vector column of the link's width and the group's row count");
    }
  }
  const std::size_t T = std::max<std::size_t>(1, std::min<std::size_t>(static_cast<std::size_t>(std::max(threads, 1)),
                                                                       std::max<std::size_t>(L, n / kBlockRows)));
  // With at least as many links as threads each thread takes whole links, so that it also
  // allocates (and first touches) its own output columns; otherwise the threads split the rows.
  const bool by_link = L >= T;
  auto sized = [&](std::size_t l) { *outputs[l] = Column::Vectors(links[l]->dout, std::vector<float>(n * links[l]->dout)); };
  if (!by_link) {
    for (std::size_t l = 0; l < L; ++l) sized(l);
  }
  std::vector<std::string> errors(T);
  auto work = [&](std::size_t t) {
    try {
      if (by_link) {
        const std::size_t l0 = L * t / T, l1 = L * (t + 1) / T;
        for (std::size_t l = l0; l < l1; ++l) sized(l);
        RunRange(links, inputs, outputs, l0, l1, 0, n);
      } else {
        // Row ranges on block boundaries.
        const std::size_t blocks = (n + kBlockRows - 1) / kBlockRows;
        const std::size_t b0 = blocks * t / T, b1 = blocks * (t + 1) / T;
        RunRange(links, inputs, outputs, 0, L, std::min(n, b0 * kBlockRows), std::min(n, b1 * kBlockRows));
      }
    } catch (const std::exception& e) {
      errors[t] = e.what();  // allocation failure; nothing else throws here
    }
  };
  std::vector<std::thread> pool;
  try {
    for (std::size_t t = 1; t < T; ++t) pool.emplace_back(work, t);
  } catch (const std::exception& e) {
    for (auto& th : pool) th.join();
    return Status::Internal(std::string("dense MLP path: starting threads: ") + e.what());
  }
  work(0);
  for (auto& th : pool) th.join();
  for (const auto& e : errors) {
    if (!e.empty()) return Status::Internal("dense MLP path: " + e);
  }
  return Status::Ok();
}

}  // namespace mlink::link::internal
