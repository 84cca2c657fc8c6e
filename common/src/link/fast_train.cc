#include "link/fast_train.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <atomic>

namespace mlink::link::internal {

void SplitRows(int64_t n, double validation_share, std::mt19937_64& rng, std::vector<int64_t>* train_idx,
               std::vector<int64_t>* val_idx) {
  std::vector<int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  int64_t n_val = static_cast<int64_t>(std::floor(static_cast<double>(n) * validation_share));
  if (n - n_val < 1) n_val = n - 1;
  val_idx->assign(order.begin(), order.begin() + n_val);
  train_idx->assign(order.begin() + n_val, order.end());
  std::sort(val_idx->begin(), val_idx->end());
}

namespace {

#define MLINK_INLINE inline __attribute__((always_inline))

// ------------------------------------------------------------------ element-wise kernels

// 8 floats (one AVX register or two SSE registers); all helpers are inlined.
typedef float V8 __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));

MLINK_INLINE V8 Load(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
MLINK_INLINE void Store(float* p, V8 v) { std::memcpy(p, &v, sizeof v); }
MLINK_INLINE V8 Splat(float x) { return V8{} + x; }
MLINK_INLINE V8 Max(V8 a, V8 b) { return a > b ? a : b; }
MLINK_INLINE V8 Min(V8 a, V8 b) { return a < b ? a : b; }

// expf (Cephes polynomial, relative error ~2e-7 on the clamped range).
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
  return p * (V8)bits;
}
MLINK_INLINE V8 Sigmoid8(V8 x) { return 1.0f / (1.0f + Exp(-x)); }
MLINK_INLINE V8 Tanh8(V8 x) { return 1.0f - 2.0f / (Exp(x + x) + 1.0f); }

template <V8 (*F)(V8)>
MLINK_INLINE void Apply(float* p, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) Store(p + i, F(Load(p + i)));
  if (i < n) {
    float tmp[8] = {};
    std::memcpy(tmp, p + i, sizeof(float) * (n - i));
    Store(tmp, F(Load(tmp)));
    std::memcpy(p + i, tmp, sizeof(float) * (n - i));
  }
}
// Each kernel twice: for AVX2 (one register per 8 floats) and for any x86-64 (two SSE
// registers), chosen once at run time. No FMA contraction in either (ISO C++ mode), so both
// give the same bits (the matrix products do not: an FMA kernel on AVX2 machines, BLAS elsewhere).
__attribute__((target("avx2"))) void ExpAvx2(float* p, int n) { Apply<Exp>(p, n); }
__attribute__((target("avx2"))) void TanhAvx2(float* p, int n) { Apply<Tanh8>(p, n); }
void ExpBase(float* p, int n) { Apply<Exp>(p, n); }
void TanhBase(float* p, int n) { Apply<Tanh8>(p, n); }
const bool kAvx2 = __builtin_cpu_supports("avx2");
void ExpN(float* p, int n) { kAvx2 ? ExpAvx2(p, n) : ExpBase(p, n); }
void TanhN(float* p, int n) { kAvx2 ? TanhAvx2(p, n) : TanhBase(p, n); }

// k of 8 lanes (k in 1..8); the other lanes read as zero and are not written.
MLINK_INLINE V8 LoadN(const float* p, int k) {
  if (k == 8) return Load(p);
  V8 v{};
  std::memcpy(&v, p, sizeof(float) * k);
  return v;
}
MLINK_INLINE void StoreN(float* p, V8 v, int k) {
  if (k == 8) return Store(p, v);
  std::memcpy(p, &v, sizeof(float) * k);
}

// One LSTM step's cells for `rows` rows, fused (the same element-wise functions, each operation
// in the order of the scalar formulas): gates [rows x 4hl] hold the pre-activations and get
// the activations (i, f, g, o); c [rows x hl] becomes the new cell, tc its tanh, h and hout
// the new hidden state.
MLINK_INLINE void CellForward(float* gates, float* c, float* tc, float* h, float* hout, int rows, int hl) {
  for (int r = 0; r < rows; ++r) {
    float* g = gates + static_cast<std::size_t>(r) * 4 * hl;
    const std::size_t at = static_cast<std::size_t>(r) * hl;
    for (int j = 0; j < hl; j += 8) {
      const int k = std::min(8, hl - j);
      const V8 i = Sigmoid8(LoadN(g + j, k)), f = Sigmoid8(LoadN(g + hl + j, k));
      const V8 gg = Tanh8(LoadN(g + 2 * hl + j, k)), o = Sigmoid8(LoadN(g + 3 * hl + j, k));
      StoreN(g + j, i, k);
      StoreN(g + hl + j, f, k);
      StoreN(g + 2 * hl + j, gg, k);
      StoreN(g + 3 * hl + j, o, k);
      const V8 cn = f * LoadN(c + at + j, k) + i * gg;
      StoreN(c + at + j, cn, k);
      const V8 t = Tanh8(cn);
      StoreN(tc + at + j, t, k);
      const V8 hv = o * t;
      StoreN(h + at + j, hv, k);
      StoreN(hout + at + j, hv, k);
    }
  }
}

// Its backward pass for one step: from the activations (gates), tanh(c) (tc), the previous
// cell (cprev), d h (dh, plus dout when given) and d c (dc, updated to d c_prev), the gate
// pre-activation gradients dg [rows x 4hl].
MLINK_INLINE void CellBackward(const float* gates, const float* tc, const float* cprev, const float* dh,
                               const float* dout, float* dc, float* dg, int rows, int hl) {
  for (int r = 0; r < rows; ++r) {
    const std::size_t g4 = static_cast<std::size_t>(r) * 4 * hl, at = static_cast<std::size_t>(r) * hl;
    const float* gr = gates + g4;
    float* d = dg + g4;
    for (int j = 0; j < hl; j += 8) {
      const int k = std::min(8, hl - j);
      const V8 i = LoadN(gr + j, k), f = LoadN(gr + hl + j, k), g = LoadN(gr + 2 * hl + j, k);
      const V8 og = LoadN(gr + 3 * hl + j, k), tcv = LoadN(tc + at + j, k);
      V8 dhv = LoadN(dh + at + j, k);
      if (dout) dhv += LoadN(dout + at + j, k);
      const V8 dcv = LoadN(dc + at + j, k) + dhv * og * (1.0f - tcv * tcv);
      StoreN(d + j, dcv * g * (i * (1.0f - i)), k);
      StoreN(d + hl + j, dcv * LoadN(cprev + at + j, k) * (f * (1.0f - f)), k);
      StoreN(d + 2 * hl + j, dcv * i * (1.0f - g * g), k);
      StoreN(d + 3 * hl + j, dhv * tcv * (og * (1.0f - og)), k);
      StoreN(dc + at + j, dcv * f, k);
    }
  }
}
__attribute__((target("avx2"))) void CellForwardAvx2(float* gates, float* c, float* tc, float* h, float* hout, int rows,
                                                     int hl) {
  CellForward(gates, c, tc, h, hout, rows, hl);
}
void CellForwardBase(float* gates, float* c, float* tc, float* h, float* hout, int rows, int hl) {
  CellForward(gates, c, tc, h, hout, rows, hl);
}
__attribute__((target("avx2"))) void CellBackwardAvx2(const float* gates, const float* tc, const float* cprev,
                                                      const float* dh, const float* dout, float* dc, float* dg,
                                                      int rows, int hl) {
  CellBackward(gates, tc, cprev, dh, dout, dc, dg, rows, hl);
}
void CellBackwardBase(const float* gates, const float* tc, const float* cprev, const float* dh, const float* dout,
                      float* dc, float* dg, int rows, int hl) {
  CellBackward(gates, tc, cprev, dh, dout, dc, dg, rows, hl);
}
const auto CellForwardN = kAvx2 ? CellForwardAvx2 : CellForwardBase;
const auto CellBackwardN = kAvx2 ? CellBackwardAvx2 : CellBackwardBase;

// ------------------------------------------------------------------ matrix products

// The products here are small (tens of rows, at most a few hundred columns), where BLAS spends
// much of its time packing its operands. On AVX2+FMA machines they run on a kernel that reads
// the operands in place: C row blocks of MR rows x 16 columns held in registers, op(A) broadcast
// one element at a time, B rows loaded as they are. Elsewhere (and for large products) BLAS.
// One tile of C: MR (<= 6) rows x (16 columns, or 8 with the masked ones left alone). The
// accumulators are named variables (arrays of them end up on the stack).
template <int MR, bool TA, bool W16>
__attribute__((target("avx2,fma"))) void KernelTile(int k, const float* a, int lda, const float* b, int ldb,
                                                    float beta, float* c, int ldc, __m256i mask) {
  __m256 x00 = _mm256_setzero_ps(), x01 = x00, x10 = x00, x11 = x00, x20 = x00, x21 = x00;
  __m256 x30 = x00, x31 = x00, x40 = x00, x41 = x00, x50 = x00, x51 = x00;
  const std::size_t sr = TA ? 1 : static_cast<std::size_t>(lda), sp = TA ? static_cast<std::size_t>(lda) : 1;
#define MLINK_TILE_ROW(r)                                                 \
  if (MR > r) {                                                           \
    const __m256 av = _mm256_broadcast_ss(ap + r * sr);                   \
    x##r##0 = _mm256_fmadd_ps(av, b0, x##r##0);                           \
    if (W16) x##r##1 = _mm256_fmadd_ps(av, b1, x##r##1);                  \
  }
  const float* ap = a;
  for (int p = 0; p < k; ++p, b += ldb, ap += sp) {
    const __m256 b0 = W16 ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, mask);
    const __m256 b1 = W16 ? _mm256_loadu_ps(b + 8) : b0;
    MLINK_TILE_ROW(0)
    MLINK_TILE_ROW(1)
    MLINK_TILE_ROW(2)
    MLINK_TILE_ROW(3)
    MLINK_TILE_ROW(4)
    MLINK_TILE_ROW(5)
  }
#undef MLINK_TILE_ROW
  const __m256 vbeta = _mm256_set1_ps(beta);
  const bool keep = beta != 0.0f;
#define MLINK_TILE_STORE(r)                                                                  \
  if (MR > r) {                                                                              \
    float* cr = c + static_cast<std::size_t>(r) * ldc;                                       \
    if (W16) {                                                                               \
      if (keep) {                                                                            \
        x##r##0 = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cr), x##r##0);                      \
        x##r##1 = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cr + 8), x##r##1);                  \
      }                                                                                      \
      _mm256_storeu_ps(cr, x##r##0);                                                         \
      _mm256_storeu_ps(cr + 8, x##r##1);                                                     \
    } else {                                                                                 \
      if (keep) x##r##0 = _mm256_fmadd_ps(vbeta, _mm256_maskload_ps(cr, mask), x##r##0);     \
      _mm256_maskstore_ps(cr, mask, x##r##0);                                                \
    }                                                                                        \
  }
  MLINK_TILE_STORE(0)
  MLINK_TILE_STORE(1)
  MLINK_TILE_STORE(2)
  MLINK_TILE_STORE(3)
  MLINK_TILE_STORE(4)
  MLINK_TILE_STORE(5)
#undef MLINK_TILE_STORE
}

// All row blocks of one column panel (so the panel of B stays in L1 across them).
template <bool TA, bool W16>
__attribute__((target("avx2,fma"))) void KernelPanel(int m, int k, const float* a, int lda, const float* b, int ldb,
                                                     float beta, float* c, int ldc, __m256i mask) {
  constexpr int kRows = 6;
  auto at = [&](int i) { return TA ? a + i : a + static_cast<std::size_t>(i) * lda; };
  int i = 0;
  for (; i + kRows <= m; i += kRows) {
    KernelTile<kRows, TA, W16>(k, at(i), lda, b, ldb, beta, c + static_cast<std::size_t>(i) * ldc, ldc, mask);
  }
  float* ci = c + static_cast<std::size_t>(i) * ldc;
  switch (m - i) {
    case 5: KernelTile<5, TA, W16>(k, at(i), lda, b, ldb, beta, ci, ldc, mask); break;
    case 4: KernelTile<4, TA, W16>(k, at(i), lda, b, ldb, beta, ci, ldc, mask); break;
    case 3: KernelTile<3, TA, W16>(k, at(i), lda, b, ldb, beta, ci, ldc, mask); break;
    case 2: KernelTile<2, TA, W16>(k, at(i), lda, b, ldb, beta, ci, ldc, mask); break;
    case 1: KernelTile<1, TA, W16>(k, at(i), lda, b, ldb, beta, ci, ldc, mask); break;
    default: break;
  }
}

template <bool TA>
__attribute__((target("avx2,fma"))) void KernelGemm(int m, int n, int k, const float* a, int lda, const float* b,
                                                    int ldb, float beta, float* c, int ldc) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int j = 0;
  for (; j + 16 <= n; j += 16) KernelPanel<TA, true>(m, k, a, lda, b + j, ldb, beta, c + j, ldc, lanes);
  for (; j < n; j += 8) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(std::min(8, n - j)), lanes);
    KernelPanel<TA, false>(m, k, a, lda, b + j, ldb, beta, c + j, ldc, mask);
  }
}

// out [cols x rows] = in [rows x cols] (row stride ld) transposed, 8 rows of `in` at a time
// (so the writes are runs of 8).
void Transpose(const float* in, int rows, int cols, int ld, float* out) {
  for (int q0 = 0; q0 < rows; q0 += 8) {
    const int qn = std::min(8, rows - q0);
    for (int p = 0; p < cols; ++p) {
      float* to = out + static_cast<std::size_t>(p) * rows + q0;
      for (int q = 0; q < qn; ++q) to[q] = in[static_cast<std::size_t>(q0 + q) * ld + p];
    }
  }
}

const bool kKernel = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");

// C = beta * C + op(A) op(B), row-major; A is M x K (or K x M transposed), B is K x N (or N x K).
void Gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float beta,
          float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (beta == 0.0f) {
      for (int i = 0; i < m; ++i) std::fill(c + static_cast<std::size_t>(i) * ldc, c + static_cast<std::size_t>(i) * ldc + n, 0.0f);
    }
    return;
  }
  const double macs = static_cast<double>(m) * n * k;
  if (!kKernel || macs > 16e6 || (tb && m < 8)) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda,
                b, ldb, beta, c, ldc);
    return;
  }
  if (tb) {  // B given as N x K: the kernel reads it as K x N (costs 1/M of the product)
    thread_local std::vector<float> bt;
    bt.resize(static_cast<std::size_t>(k) * n);
    Transpose(b, n, k, ldb, bt.data());
    b = bt.data();
    ldb = n;
  }
  if (ta) {
    KernelGemm<true>(m, n, k, a, lda, b, ldb, beta, c, ldc);
  } else {
    KernelGemm<false>(m, n, k, a, lda, b, ldb, beta, c, ldc);
  }
}

// Every row of out [rows x n] = bias.
void FillRows(float* out, int rows, const float* bias, int n) {
  for (int r = 0; r < rows; ++r) std::memcpy(out + static_cast<std::size_t>(r) * n, bias, sizeof(float) * n);
}

// acc[j] += sum_r m[r][j].
void AddColSums(const float* m, int rows, int n, float* acc) {
  for (int r = 0; r < rows; ++r) {
    const float* row = m + static_cast<std::size_t>(r) * n;
    for (int j = 0; j < n; ++j) acc[j] += row[j];
  }
}

// ------------------------------------------------------------------ layout and data

enum class Kind { kVec2Vec, kSeq2Vec, kVec2Seq, kSeq2Seq };

Kind KindOf(const LinkSpec& s) {
  bool src = s.source.kind == FormatKind::kSequence, tgt = s.target.kind == FormatKind::kSequence;
  if (src) return tgt ? Kind::kSeq2Seq : Kind::kSeq2Vec;
  return tgt ? Kind::kVec2Seq : Kind::kVec2Vec;
}

// Where each parameter sits in the flat vector (Link::GetParams order, the modules' shapes).
struct Layout {
  Kind kind = Kind::kVec2Vec;
  int din = 0, vin = 0, hid = 0, dout = 0, vout = 0, emb = 0, hl = 0, tin = 0, to = 0;
  int task = 0;  // 0 soft cross-entropy, 1 BCE, 2 MSE, 3 L1 (vector targets)
  std::size_t w1 = 0, b1 = 0, w2 = 0, b2 = 0;                          // MLP
  std::size_t eemb = 0, ewx = 0, ewh = 0, eb = 0;                      // encoder LSTM
  std::size_t demb = 0, dwx = 0, dwh = 0, db = 0;                      // decoder LSTM
  std::size_t wch = 0, wcc = 0, bc = 0, wo = 0, bo = 0;                // attention head
  std::size_t total = 0;
};

Result<Layout> MakeLayout(const LinkSpec& s, const FlatParams& p) {
  MLINK_RETURN_IF_ERROR(p.Validate());
  Layout l;
  l.kind = KindOf(s);
  l.din = s.source.dim;
  l.vin = s.source.vocab;
  l.hid = s.HiddenUnits();
  l.dout = s.target.dim;
  l.vout = s.target.vocab;
  l.emb = s.embed_dim;
  l.hl = s.lstm_hidden;
  l.tin = s.source.max_len + 1;
  l.to = s.target.max_len + 1;
  switch (s.task) {
    case TaskKind::kSingleLabel: l.task = 0; break;
    case TaskKind::kMultiLabel: l.task = 1; break;
    default: l.task = s.regression_loss == RegressionLoss::kL1 ? 3 : 2;
  }
  std::map<std::string, std::pair<std::size_t, std::size_t>> at;  // name -> (offset, count)
  std::size_t offset = 0;
  for (std::size_t i = 0; i < p.names.size(); ++i) {
    std::size_t count = 1;
    for (int64_t d : p.shapes[i]) count *= static_cast<std::size_t>(d);
    at[p.names[i]] = {offset, count};
    offset += count;
  }
  l.total = offset;
  std::size_t expected_tensors = 0;
  Status bad = Status::Ok();
  auto need = [&](const char* name, std::size_t count, std::size_t* where) {
    ++expected_tensors;
    auto it = at.find(name);
    if (it == at.end() || it->second.second != count) {
      if (bad.ok()) bad = Status::InvalidArgument(std::string("link parameters: '") + name + "' missing or of another size");
      return;
    }
    *where = it->second.first;
  };
  auto lstm = [&](bool dec, int vocab) {
    const std::size_t e = l.emb, h = l.hl;
    need(dec ? "dec_embed" : "enc_embed", vocab * e, dec ? &l.demb : &l.eemb);
    need(dec ? "dec_wx" : "enc_wx", e * 4 * h, dec ? &l.dwx : &l.ewx);
    need(dec ? "dec_wh" : "enc_wh", h * 4 * h, dec ? &l.dwh : &l.ewh);
    need(dec ? "dec_b" : "enc_b", 4 * h, dec ? &l.db : &l.eb);
  };
  auto mlp = [&](const char* prefix, int in, int out) {
    std::string pre(prefix);
    need((pre + "w1").c_str(), static_cast<std::size_t>(in) * l.hid, &l.w1);
    need((pre + "b1").c_str(), l.hid, &l.b1);
    need((pre + "w2").c_str(), static_cast<std::size_t>(l.hid) * out, &l.w2);
    need((pre + "b2").c_str(), out, &l.b2);
  };
  switch (l.kind) {
    case Kind::kVec2Vec: mlp("mlp_", l.din, l.dout); break;
    case Kind::kSeq2Vec:
      lstm(false, l.vin);
      mlp("mlp_", l.hl, l.dout);
      break;
    case Kind::kVec2Seq: mlp("enc_", l.din, l.hl); break;
    case Kind::kSeq2Seq: lstm(false, l.vin); break;
  }
  if (l.kind == Kind::kVec2Seq || l.kind == Kind::kSeq2Seq) {
    lstm(true, l.vout);
    const std::size_t h = l.hl;
    need("dec_wch", h * h, &l.wch);
    need("dec_wcc", h * h, &l.wcc);
    need("dec_bc", h, &l.bc);
    need("dec_wo", h * l.vout, &l.wo);
    need("dec_bo", l.vout, &l.bo);
  }
  MLINK_RETURN_IF_ERROR(bad);
  if (expected_tensors != p.names.size()) return Status::InvalidArgument("link parameters: unexpected tensors for " + s.ArchName());
  return l;
}

// One link's rows: vectors are read from the columns; sequences packed once (source: content,
// EOS; target: content, EOS, then PAD) with their lengths including EOS.
struct Data {
  const Column* x = nullptr;
  const Column* y = nullptr;
  std::vector<int32_t> xtok, ytok;
  std::vector<int> xlen, ylen;
  int tin = 0, to = 0;
  // Token sequences repeat (model outputs such as labels or captions do): rows with the same
  // source sequence share one encoder pass, rows with the same (source, target) pair one
  // decoder pass weighted by their count; same sums, fewer rows.
  std::vector<int> xid;   // per row: id of its distinct source sequence
  std::vector<int> pid;   // per row: id of its distinct (source, target) pair (seq2seq)
  int nx = 0, np = 0;     // distinct counts
};

Result<Data> Pack(const LinkSpec& s, const Column& x, const Column& y) {
  MLINK_RETURN_IF_ERROR(x.Check(s.source, "link source"));
  MLINK_RETURN_IF_ERROR(y.Check(s.target, "link target"));
  if (x.rows() != y.rows()) return Status::InvalidArgument("source and target differ in row count");
  Data d;
  d.x = &x;
  d.y = &y;
  const std::size_t n = x.rows();
  if (s.source.kind == FormatKind::kSequence) {
    d.tin = s.source.max_len + 1;
    d.xtok.assign(n * d.tin, kPadToken);
    d.xlen.resize(n);
    for (std::size_t r = 0; r < n; ++r) {
      const auto& q = x.seqs[r];
      const int len = std::min<int>(static_cast<int>(q.size()), d.tin - 1);
      for (int t = 0; t < len; ++t) d.xtok[r * d.tin + t] = q[t];
      d.xtok[r * d.tin + len] = kEosToken;
      d.xlen[r] = len + 1;
    }
  }
  if (s.target.kind == FormatKind::kSequence) {
    d.to = s.target.max_len + 1;
    d.ytok.assign(n * d.to, kPadToken);
    d.ylen.resize(n);
    for (std::size_t r = 0; r < n; ++r) {
      const auto& q = y.seqs[r];
      const int len = std::min<int>(static_cast<int>(q.size()), d.to - 1);
      for (int t = 0; t < len; ++t) d.ytok[r * d.to + t] = q[t];
      d.ytok[r * d.to + len] = kEosToken;
      d.ylen[r] = len + 1;
    }
  }
  if (s.source.kind == FormatKind::kSequence) {
    std::map<std::vector<int32_t>, int> ids;
    d.xid.resize(n);
    for (std::size_t r = 0; r < n; ++r) d.xid[r] = ids.emplace(x.seqs[r], static_cast<int>(ids.size())).first->second;
    d.nx = static_cast<int>(ids.size());
    if (s.target.kind == FormatKind::kSequence) {
      std::map<std::pair<int, std::vector<int32_t>>, int> pairs;
      d.pid.resize(n);
      for (std::size_t r = 0; r < n; ++r) {
        d.pid[r] = pairs.emplace(std::make_pair(d.xid[r], y.seqs[r]), static_cast<int>(pairs.size())).first->second;
      }
      d.np = static_cast<int>(pairs.size());
    }
  }
  return d;
}

// The distinct ids among rows (first occurrence order): of_row[i] = index of row i's id in
// `first`, first[k] = a row carrying id k; count[k] = how many rows carry it.
// `stamp` (all -1 between calls) is scratch indexed by id.
void Distinct(const std::vector<int>& id, int n_ids, const std::vector<int64_t>& rows, std::vector<int>* stamp,
              std::vector<int>* of_row, std::vector<int>* first, std::vector<float>* count) {
  if (static_cast<int>(stamp->size()) < n_ids) stamp->resize(n_ids, -1);
  of_row->resize(rows.size());
  first->clear();
  count->clear();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    int& k = (*stamp)[id[rows[i]]];
    if (k < 0) {
      k = static_cast<int>(first->size());
      first->push_back(static_cast<int>(i));
      count->push_back(0);
    }
    (*of_row)[i] = k;
    (*count)[k] += 1;
  }
  for (int f : *first) (*stamp)[id[rows[f]]] = -1;
}

// ------------------------------------------------------------------ building blocks

// Linear -> ReLU -> Linear over B rows.
struct Mlp {
  std::vector<float> z1, a, out, da;

  void Forward(const float* x, int b, int in, int hid, int out_dim, const float* w1, const float* b1, const float* w2,
               const float* b2) {
    z1.resize(static_cast<std::size_t>(b) * hid);
    a.resize(z1.size());
    out.resize(static_cast<std::size_t>(b) * out_dim);
    FillRows(z1.data(), b, b1, hid);
    Gemm(false, false, b, hid, in, x, in, w1, hid, 1.0f, z1.data(), hid);
    for (std::size_t i = 0; i < z1.size(); ++i) a[i] = z1[i] > 0 ? z1[i] : 0.0f;
    FillRows(out.data(), b, b2, out_dim);
    Gemm(false, false, b, out_dim, hid, a.data(), hid, w2, out_dim, 1.0f, out.data(), out_dim);
  }

  // dout [B x out]; adds the weight gradients; dx [B x in] (optional) is overwritten.
  void Backward(const float* x, int b, int in, int hid, int out_dim, const float* w1, const float* w2,
                const float* dout, float* gw1, float* gb1, float* gw2, float* gb2, float* dx) {
    Gemm(true, false, hid, out_dim, b, a.data(), hid, dout, out_dim, 1.0f, gw2, out_dim);
    AddColSums(dout, b, out_dim, gb2);
    da.resize(static_cast<std::size_t>(b) * hid);
    Gemm(false, true, b, hid, out_dim, dout, out_dim, w2, out_dim, 0.0f, da.data(), hid);
    for (std::size_t i = 0; i < da.size(); ++i) {
      if (!(z1[i] > 0)) da[i] = 0.0f;
    }
    Gemm(true, false, in, hid, b, x, in, da.data(), hid, 1.0f, gw1, hid);
    AddColSums(da.data(), b, hid, gb1);
    if (dx) Gemm(false, true, b, in, hid, da.data(), hid, w1, hid, 0.0f, dx, in);
  }
};

// An LSTM (gates i, f, g, o; one bias) over token inputs. Rows come in descending length order,
// so the rows active at step t are a prefix [0, n[t]); a row keeps its h and c after its last
// step. Positions (t, r) are numbered step by step.
struct Lstm {
  int hl = 0, vocab = 0, emb = 0;
  std::vector<int> n, off;  // active rows per step, first position of each step
  int positions = 0;
  std::vector<int32_t> tok;  // input token per position
  std::vector<float> table, gates, hprev, cprev, tc, hout;
  std::vector<float> h, c, dh, dc, dg, dt, wht;

  // lens sorted descending; positions are then filled by the caller through tok.
  void Plan(const std::vector<int>& lens) {
    const int steps = lens.empty() ? 0 : lens[0];
    n.assign(steps, 0);
    off.assign(steps, 0);
    positions = 0;
    for (int t = 0; t < steps; ++t) {
      int k = 0;
      while (k < static_cast<int>(lens.size()) && lens[k] > t) ++k;
      n[t] = k;
      off[t] = positions;
      positions += k;
    }
    tok.resize(positions);
  }

  // h0, c0 [B x hl] (null: zeros).
  void Forward(int b, const float* embed, const float* wx, const float* wh, const float* bias, const float* h0,
               const float* c0) {
    const int g4 = 4 * hl;
    table.resize(static_cast<std::size_t>(vocab) * g4);
    FillRows(table.data(), vocab, bias, g4);
    Gemm(false, false, vocab, g4, emb, embed, emb, wx, g4, 1.0f, table.data(), g4);
    const std::size_t sb = static_cast<std::size_t>(b) * hl;
    if (h0) h.assign(h0, h0 + sb); else h.assign(sb, 0.0f);
    if (c0) c.assign(c0, c0 + sb); else c.assign(sb, 0.0f);
    gates.resize(static_cast<std::size_t>(positions) * g4);
    hprev.resize(static_cast<std::size_t>(positions) * hl);
    cprev.resize(hprev.size());
    tc.resize(hprev.size());
    hout.resize(hprev.size());
    for (std::size_t t = 0; t < n.size(); ++t) {
      const int nt = n[t], o = off[t];
      float* g = gates.data() + static_cast<std::size_t>(o) * g4;
      for (int r = 0; r < nt; ++r) std::memcpy(g + static_cast<std::size_t>(r) * g4, table.data() + static_cast<std::size_t>(tok[o + r]) * g4, sizeof(float) * g4);
      Gemm(false, false, nt, g4, hl, h.data(), hl, wh, g4, 1.0f, g, g4);
      std::memcpy(hprev.data() + static_cast<std::size_t>(o) * hl, h.data(), sizeof(float) * nt * hl);
      std::memcpy(cprev.data() + static_cast<std::size_t>(o) * hl, c.data(), sizeof(float) * nt * hl);
      CellForwardN(g, c.data(), tc.data() + static_cast<std::size_t>(o) * hl, h.data(),
                   hout.data() + static_cast<std::size_t>(o) * hl, nt, hl);
    }
  }

  // On entry dh, dc [B x hl] hold the gradients of the final states; dout [positions x hl]
  // (optional) those of the outputs. On exit dh, dc hold the gradients of h0, c0. Adds the
  // weight gradients.
  void Backward(const float* embed, const float* wx, const float* wh, const float* dout, float* gembed, float* gwx,
                float* gwh, float* gb) {
    const int g4 = 4 * hl;
    dg.resize(static_cast<std::size_t>(positions) * g4);
    // d h = d gates x Wh^T at every step: Wh^T [4hl x hl] taken once.
    wht.resize(static_cast<std::size_t>(hl) * g4);
    Transpose(wh, hl, g4, g4, wht.data());
    for (int t = static_cast<int>(n.size()) - 1; t >= 0; --t) {
      const int nt = n[t], o = off[t];
      const std::size_t po = static_cast<std::size_t>(o);
      CellBackwardN(gates.data() + po * g4, tc.data() + po * hl, cprev.data() + po * hl, dh.data(),
                    dout ? dout + po * hl : nullptr, dc.data(), dg.data() + po * g4, nt, hl);
      Gemm(false, false, nt, hl, g4, dg.data() + static_cast<std::size_t>(o) * g4, g4, wht.data(), hl, 0.0f, dh.data(), hl);
    }
    Gemm(true, false, hl, g4, positions, hprev.data(), hl, dg.data(), g4, 1.0f, gwh, g4);
    dt.assign(static_cast<std::size_t>(vocab) * g4, 0.0f);
    for (int p = 0; p < positions; ++p) {
      float* row = dt.data() + static_cast<std::size_t>(tok[p]) * g4;
      const float* d = dg.data() + static_cast<std::size_t>(p) * g4;
      for (int j = 0; j < g4; ++j) row[j] += d[j];
    }
    AddColSums(dt.data(), vocab, g4, gb);
    Gemm(true, false, emb, g4, vocab, embed, emb, dt.data(), g4, 1.0f, gwx, g4);
    Gemm(false, true, vocab, emb, g4, dt.data(), g4, wx, g4, 1.0f, gembed, emb);
  }
};

// Sorts rows by descending length (stable).
std::vector<int> ByLength(const std::vector<int>& len) {
  std::vector<int> idx(len.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return len[a] > len[b]; });
  return idx;
}

// ------------------------------------------------------------------ one link

class Net {
 public:
  Net(const Layout& layout, std::vector<float> params) : l_(layout), w_(std::move(params)), g_(w_.size()) {}

  std::vector<float>& params() { return w_; }
  // Accumulated by Run(train); the caller zeroes it after using it.
  std::vector<float>& grad() { return g_; }

  // Mean loss over `rows` (the module's Loss); with `train`, the gradient into grad().
  double Run(const Data& d, const std::vector<int64_t>& rows, bool train) {
    const int b = static_cast<int>(rows.size());
    switch (l_.kind) {
      case Kind::kVec2Vec: {
        GatherVec(*d.x, rows, nullptr, &x_);
        GatherVec(*d.y, rows, nullptr, &y_);
        mlp_.Forward(x_.data(), b, l_.din, l_.hid, l_.dout, P(l_.w1), P(l_.b1), P(l_.w2), P(l_.b2));
        double loss = VecLoss(b, train);
        if (train) {
          mlp_.Backward(x_.data(), b, l_.din, l_.hid, l_.dout, P(l_.w1), P(l_.w2), dz_.data(), G(l_.w1), G(l_.b1),
                        G(l_.w2), G(l_.b2), nullptr);
        }
        return loss;
      }
      case Kind::kSeq2Vec: {
        Encoder(d, rows);
        const std::size_t hl = l_.hl;
        GatherVec(*d.y, rows, nullptr, &y_);
        hin_.resize(b * hl);
        for (int i = 0; i < b; ++i) std::memcpy(hin_.data() + i * hl, enc_.h.data() + enc_of_[i] * hl, sizeof(float) * hl);
        mlp_.Forward(hin_.data(), b, l_.hl, l_.hid, l_.dout, P(l_.w1), P(l_.b1), P(l_.w2), P(l_.b2));
        double loss = VecLoss(b, train);
        if (train) {
          dhin_.resize(b * hl);
          mlp_.Backward(hin_.data(), b, l_.hl, l_.hid, l_.dout, P(l_.w1), P(l_.w2), dz_.data(), G(l_.w1), G(l_.b1),
                        G(l_.w2), G(l_.b2), dhin_.data());
          enc_.dh.assign(enc_.h.size(), 0.0f);
          enc_.dc.assign(enc_.h.size(), 0.0f);
          for (int i = 0; i < b; ++i) {
            float* to = enc_.dh.data() + enc_of_[i] * hl;
            const float* from = dhin_.data() + i * hl;
            for (std::size_t j = 0; j < hl; ++j) to[j] += from[j];
          }
          enc_.Backward(P(l_.eemb), P(l_.ewx), P(l_.ewh), nullptr, G(l_.eemb), G(l_.ewx), G(l_.ewh), G(l_.eb));
        }
        return loss;
      }
      case Kind::kVec2Seq: {
        GatherVec(*d.x, rows, nullptr, &x_);
        mlp_.Forward(x_.data(), b, l_.din, l_.hid, l_.hl, P(l_.w1), P(l_.b1), P(l_.w2), P(l_.b2));
        e_ = mlp_.out;
        TanhN(e_.data(), static_cast<int>(e_.size()));
        // Decoder rows by target length; each row's memory is its encoding (one slot).
        std::vector<int> dlen(b);
        for (int r = 0; r < b; ++r) dlen[r] = d.ylen[rows[r]];
        dorder_ = ByLength(dlen);
        dweight_.assign(b, 1.0f);
        const std::size_t hl = l_.hl;
        h0_.resize(b * hl);
        mlen_.assign(b, 1);
        slots_ = 1;
        for (int q = 0; q < b; ++q) std::memcpy(h0_.data() + q * hl, e_.data() + dorder_[q] * hl, sizeof(float) * hl);
        mem_ = h0_;
        double loss = Decoder(d, rows, train);
        if (train) {
          // d e = d h0 + d memory, back to batch order, through tanh and the MLP.
          de_.resize(b * hl);
          for (int q = 0; q < b; ++q) {
            float* out = de_.data() + dorder_[q] * hl;
            const float* a = dec_.dh.data() + q * hl;
            const float* m = dmem_.data() + q * hl;
            for (std::size_t j = 0; j < hl; ++j) out[j] = a[j] + m[j];
          }
          for (std::size_t i = 0; i < de_.size(); ++i) de_[i] *= 1.0f - e_[i] * e_[i];
          mlp_.Backward(x_.data(), b, l_.din, l_.hid, l_.hl, P(l_.w1), P(l_.w2), de_.data(), G(l_.w1), G(l_.b1),
                        G(l_.w2), G(l_.b2), nullptr);
        }
        return loss;
      }
      case Kind::kSeq2Seq: {
        Encoder(d, rows);
        // One decoder row per distinct (source, target) pair, weighted by its count.
        std::vector<int> pair_of, first;
        Distinct(d.pid, d.np, rows, &stamp_, &pair_of, &first, &pcount_);
        const int nq = static_cast<int>(first.size());
        std::vector<int> dlen(nq);
        for (int k = 0; k < nq; ++k) dlen[k] = d.ylen[rows[first[k]]];
        std::vector<int> sorted_pairs = ByLength(dlen);
        dorder_.resize(nq);
        dweight_.resize(nq);
        for (int q = 0; q < nq; ++q) {
          dorder_[q] = first[sorted_pairs[q]];
          dweight_[q] = pcount_[sorted_pairs[q]];
        }
        const std::size_t hl = l_.hl;
        slots_ = d.tin;
        h0_.resize(nq * hl);
        c0_.resize(nq * hl);
        mem_.assign(nq * slots_ * hl, 0.0f);
        mlen_.resize(nq);
        for (int q = 0; q < nq; ++q) {
          const int k = enc_of_[dorder_[q]];
          std::memcpy(h0_.data() + q * hl, enc_.h.data() + k * hl, sizeof(float) * hl);
          std::memcpy(c0_.data() + q * hl, enc_.c.data() + k * hl, sizeof(float) * hl);
          mlen_[q] = d.xlen[rows[dorder_[q]]];
          for (int s = 0; s < mlen_[q]; ++s) {
            std::memcpy(mem_.data() + (q * slots_ + s) * hl, enc_.hout.data() + (enc_.off[s] + k) * hl, sizeof(float) * hl);
          }
        }
        double loss = Decoder(d, rows, train);
        if (train) {
          enc_.dh.assign(enc_.h.size(), 0.0f);
          enc_.dc.assign(enc_.h.size(), 0.0f);
          denc_out_.assign(static_cast<std::size_t>(enc_.positions) * hl, 0.0f);
          auto add = [hl](float* to, const float* from) {
            for (std::size_t j = 0; j < hl; ++j) to[j] += from[j];
          };
          for (int q = 0; q < nq; ++q) {
            const int k = enc_of_[dorder_[q]];
            add(enc_.dh.data() + k * hl, dec_.dh.data() + q * hl);
            add(enc_.dc.data() + k * hl, dec_.dc.data() + q * hl);
            for (int s = 0; s < mlen_[q]; ++s) {
              add(denc_out_.data() + (enc_.off[s] + k) * hl, dmem_.data() + (q * slots_ + s) * hl);
            }
          }
          enc_.Backward(P(l_.eemb), P(l_.ewx), P(l_.ewh), denc_out_.data(), G(l_.eemb), G(l_.ewx), G(l_.ewh), G(l_.eb));
        }
        return loss;
      }
    }
    return 0;
  }

 private:
  const float* P(std::size_t at) const { return w_.data() + at; }
  float* G(std::size_t at) { return g_.data() + at; }

  // Rows of a vector column (in `order` of the batch when given).
  static void GatherVec(const Column& c, const std::vector<int64_t>& rows, const std::vector<int>* order,
                        std::vector<float>* out) {
    const std::size_t d = static_cast<std::size_t>(c.dim);
    out->resize(rows.size() * d);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const int64_t r = rows[order ? (*order)[i] : i];
      std::memcpy(out->data() + i * d, c.values.data() + static_cast<std::size_t>(r) * d, sizeof(float) * d);
    }
  }

  // Runs the source encoder LSTM once per distinct source sequence among `rows`, in
  // descending length order: enc_of_[i] is batch row i's encoder row. Final states in
  // enc_.h / enc_.c, outputs in enc_.hout.
  void Encoder(const Data& d, const std::vector<int64_t>& rows) {
    std::vector<int> first;
    std::vector<float> count;
    Distinct(d.xid, d.nx, rows, &stamp_, &enc_of_, &first, &count);
    const int u = static_cast<int>(first.size());
    std::vector<int> len(u);
    for (int k = 0; k < u; ++k) len[k] = d.xlen[rows[first[k]]];
    std::vector<int> order = ByLength(len);  // encoder row -> distinct index
    std::vector<int> where(u), sorted(u);
    for (int e = 0; e < u; ++e) {
      where[order[e]] = e;
      sorted[e] = len[order[e]];
    }
    for (int& k : enc_of_) k = where[k];
    enc_.hl = l_.hl;
    enc_.vocab = l_.vin;
    enc_.emb = l_.emb;
    enc_.Plan(sorted);
    for (std::size_t t = 0; t < enc_.n.size(); ++t) {
      for (int e = 0; e < enc_.n[t]; ++e) enc_.tok[enc_.off[t] + e] = d.xtok[rows[first[order[e]]] * d.tin + t];
    }
    enc_.Forward(u, P(l_.eemb), P(l_.ewx), P(l_.ewh), P(l_.eb), nullptr, nullptr);
  }

  // Soft cross-entropy / BCE / MSE / L1 of mlp_.out against y_ (B rows); with `train`, dz_.
  double VecLoss(int b, bool train) {
    const int dim = l_.dout;
    const float* z = mlp_.out.data();
    const float* y = y_.data();
    if (train) dz_.resize(static_cast<std::size_t>(b) * dim);
    double total = 0;
    const float inv_b = 1.0f / static_cast<float>(b);
    const float inv_bd = 1.0f / (static_cast<float>(b) * static_cast<float>(dim));
    for (int r = 0; r < b; ++r) {
      const float* zr = z + static_cast<std::size_t>(r) * dim;
      const float* yr = y + static_cast<std::size_t>(r) * dim;
      float* gr = train ? dz_.data() + static_cast<std::size_t>(r) * dim : nullptr;
      double row = 0;
      switch (l_.task) {
        case 0: {
          float mx = zr[0];
          for (int j = 1; j < dim; ++j) mx = std::max(mx, zr[j]);
          double se = 0, sy = 0;
          for (int j = 0; j < dim; ++j) se += std::exp(static_cast<double>(zr[j] - mx));
          const double lse = mx + std::log(se);
          for (int j = 0; j < dim; ++j) {
            row -= yr[j] * (zr[j] - lse);
            sy += yr[j];
          }
          if (gr) {
            for (int j = 0; j < dim; ++j) {
              gr[j] = static_cast<float>((std::exp(zr[j] - lse) * sy - yr[j]) * inv_b);
            }
          }
          break;
        }
        case 1:
          for (int j = 0; j < dim; ++j) {
            const double zj = zr[j];
            row += std::max(zj, 0.0) - zj * yr[j] + std::log1p(std::exp(-std::abs(zj)));
            if (gr) gr[j] = static_cast<float>((1.0 / (1.0 + std::exp(-zj)) - yr[j]) * inv_bd);
          }
          row /= dim;
          break;
        case 2:
          for (int j = 0; j < dim; ++j) {
            const float e = zr[j] - yr[j];
            row += static_cast<double>(e) * e;
            if (gr) gr[j] = 2.0f * e * inv_bd;
          }
          row /= dim;
          break;
        default:
          for (int j = 0; j < dim; ++j) {
            const float e = zr[j] - yr[j];
            row += std::abs(e);
            if (gr) gr[j] = (e > 0 ? 1.0f : (e < 0 ? -1.0f : 0.0f)) * inv_bd;
          }
          row /= dim;
      }
      total += row;
    }
    return total / b;
  }

  // Teacher-forced decoder over the rows in dorder_ (descending target length) from h0_ (and
  // c0_ for seq2seq; zeros for vec2seq), attending over mem_ [B x slots_ x hl] (mlen_ real
  // slots per row). Returns the token cross-entropy; with `train`, adds the decoder's weight
  // gradients and leaves d h0 / d c0 in dec_.dh / dec_.dc and d memory in dmem_.
  double Decoder(const Data& d, const std::vector<int64_t>& rows, bool train) {
    const int b = static_cast<int>(dorder_.size());
    const int hl = l_.hl, v = l_.vout;
    std::vector<int> sorted(b);
    for (int q = 0; q < b; ++q) sorted[q] = d.ylen[rows[dorder_[q]]];
    dec_.hl = hl;
    dec_.vocab = v;
    dec_.emb = l_.emb;
    dec_.Plan(sorted);
    const int np = dec_.positions;
    target_.resize(np);
    for (std::size_t t = 0; t < dec_.n.size(); ++t) {
      for (int q = 0; q < dec_.n[t]; ++q) {
        const int32_t* y = d.ytok.data() + rows[dorder_[q]] * d.to;
        dec_.tok[dec_.off[t] + q] = t == 0 ? kBosToken : y[t - 1];
        target_[dec_.off[t] + q] = y[t];
      }
    }
    const bool seq_src = l_.kind == Kind::kSeq2Seq;
    dec_.Forward(b, P(l_.demb), P(l_.dwx), P(l_.dwh), P(l_.db), h0_.data(), seq_src ? c0_.data() : nullptr);
    // Position p belongs to decoder row q(p).
    prow_.resize(np);
    for (std::size_t t = 0; t < dec_.n.size(); ++t) {
      for (int q = 0; q < dec_.n[t]; ++q) prow_[dec_.off[t] + q] = q;
    }
    // With one memory slot (vec2seq) attention is the identity: ctx = the row's memory at every
    // step, so ctx x Wcc is taken once per row.
    const bool one_slot = l_.kind == Kind::kVec2Seq;
    comb_.resize(static_cast<std::size_t>(np) * hl);
    FillRows(comb_.data(), np, P(l_.bc), hl);
    Gemm(false, false, np, hl, hl, dec_.hout.data(), hl, P(l_.wch), hl, 1.0f, comb_.data(), hl);
    if (one_slot) {
      ctxw_.resize(static_cast<std::size_t>(b) * hl);
      Gemm(false, false, b, hl, hl, mem_.data(), hl, P(l_.wcc), hl, 0.0f, ctxw_.data(), hl);
      for (int p = 0; p < np; ++p) {
        float* cr = comb_.data() + static_cast<std::size_t>(p) * hl;
        const float* add = ctxw_.data() + static_cast<std::size_t>(prow_[p]) * hl;
        for (int j = 0; j < hl; ++j) cr[j] += add[j];
      }
    } else {
      Attend(np);
      Gemm(false, false, np, hl, hl, ctx_.data(), hl, P(l_.wcc), hl, 1.0f, comb_.data(), hl);
    }
    TanhN(comb_.data(), static_cast<int>(comb_.size()));
    logits_.resize(static_cast<std::size_t>(np) * v);
    FillRows(logits_.data(), np, P(l_.bo), v);
    Gemm(false, false, np, v, hl, comb_.data(), hl, P(l_.wo), v, 1.0f, logits_.data(), v);
    return Loss(d, rows, train);
  }

  // Dot attention of every decoder position over its row's memory: attn_, ctx_.
  void Attend(int np) {
    const int hl = l_.hl, s_max = slots_;
    attn_.assign(static_cast<std::size_t>(np) * s_max, 0.0f);
    ctx_.assign(static_cast<std::size_t>(np) * hl, 0.0f);
    for (int p = 0; p < np; ++p) {
      const int q = prow_[p];
      const float* out = dec_.hout.data() + static_cast<std::size_t>(p) * hl;
      const float* mem = mem_.data() + static_cast<std::size_t>(q) * s_max * hl;
      float* a = attn_.data() + static_cast<std::size_t>(p) * s_max;
      float mx = -std::numeric_limits<float>::infinity();
      for (int s = 0; s < mlen_[q]; ++s) {
        float dot = 0;
        for (int j = 0; j < hl; ++j) dot += out[j] * mem[s * hl + j];
        a[s] = dot;
        mx = std::max(mx, dot);
      }
      float sum = 0;
      for (int s = 0; s < mlen_[q]; ++s) sum += a[s] = std::exp(a[s] - mx);
      float* ctx = ctx_.data() + static_cast<std::size_t>(p) * hl;
      for (int s = 0; s < mlen_[q]; ++s) {
        a[s] /= sum;
        for (int j = 0; j < hl; ++j) ctx[j] += a[s] * mem[s * hl + j];
      }
    }
  }

  // The decoder's loss from logits_; with `train`, its backward pass (see Decoder).
  double Loss(const Data& d, const std::vector<int64_t>& rows, bool train) {
    const int b = static_cast<int>(dorder_.size());
    const int hl = l_.hl, v = l_.vout, s_max = slots_, np = dec_.positions;
    const bool one_slot = l_.kind == Kind::kVec2Seq;
    // Token cross-entropy over ids >= EOS (PAD and BOS carry a -1e9 bias: probability 0),
    // averaged over the batch's tokens (a decoder row counts dweight_ times).
    double tokens = 0;
    for (int q = 0; q < b; ++q) tokens += static_cast<double>(dweight_[q]) * d.ylen[rows[dorder_[q]]];
    tokens = std::max(1.0, tokens);
    double total = 0;
    expbuf_.resize(v);
    for (int p = 0; p < np; ++p) {
      float* z = logits_.data() + static_cast<std::size_t>(p) * v;
      float mx = z[kEosToken];
      for (int k = kEosToken + 1; k < v; ++k) mx = std::max(mx, z[k]);
      const int nv = v - kEosToken;
      float* e = expbuf_.data();
      for (int k = 0; k < nv; ++k) e[k] = z[kEosToken + k] - mx;
      ExpN(e, nv);
      float se = 0;
      for (int k = 0; k < nv; ++k) se += e[k];
      const float w = dweight_[prow_[p]];
      total += static_cast<double>(w) * (mx + std::log(se) - z[target_[p]]);
      if (train) {  // logits become their gradient
        const float scale = static_cast<float>(w / tokens) / se;
        const float inv = static_cast<float>(w / tokens);
        for (int k = 0; k < kEosToken; ++k) z[k] = 0.0f;
        for (int k = 0; k < nv; ++k) z[kEosToken + k] = e[k] * scale;
        z[target_[p]] -= inv;
      }
    }
    if (!train) return total / tokens;
    const float* dlog = logits_.data();
    Gemm(true, false, hl, v, np, comb_.data(), hl, dlog, v, 1.0f, G(l_.wo), v);
    AddColSums(dlog, np, v, G(l_.bo));
    dpre_.resize(comb_.size());
    Gemm(false, true, np, hl, v, dlog, v, P(l_.wo), v, 0.0f, dpre_.data(), hl);
    for (std::size_t i = 0; i < dpre_.size(); ++i) dpre_[i] *= 1.0f - comb_[i] * comb_[i];
    Gemm(true, false, hl, hl, np, dec_.hout.data(), hl, dpre_.data(), hl, 1.0f, G(l_.wch), hl);
    AddColSums(dpre_.data(), np, hl, G(l_.bc));
    dout_.resize(comb_.size());
    Gemm(false, true, np, hl, hl, dpre_.data(), hl, P(l_.wch), hl, 0.0f, dout_.data(), hl);
    if (one_slot) {
      // d ctx summed over each row's positions; d memory = that x Wcc^T.
      drow_.assign(static_cast<std::size_t>(b) * hl, 0.0f);
      for (int p = 0; p < np; ++p) {
        float* to = drow_.data() + static_cast<std::size_t>(prow_[p]) * hl;
        const float* from = dpre_.data() + static_cast<std::size_t>(p) * hl;
        for (int j = 0; j < hl; ++j) to[j] += from[j];
      }
      Gemm(true, false, hl, hl, b, mem_.data(), hl, drow_.data(), hl, 1.0f, G(l_.wcc), hl);
      dmem_.resize(mem_.size());
      Gemm(false, true, b, hl, hl, drow_.data(), hl, P(l_.wcc), hl, 0.0f, dmem_.data(), hl);
      return Backward(total / tokens);
    }
    Gemm(true, false, hl, hl, np, ctx_.data(), hl, dpre_.data(), hl, 1.0f, G(l_.wcc), hl);
    dctx_.resize(comb_.size());
    Gemm(false, true, np, hl, hl, dpre_.data(), hl, P(l_.wcc), hl, 0.0f, dctx_.data(), hl);
    dmem_.assign(mem_.size(), 0.0f);
    float dp[64];
    std::vector<float> dp_big;
    for (int p = 0; p < np; ++p) {
      const int q = prow_[p];
      const float* out = dec_.hout.data() + static_cast<std::size_t>(p) * hl;
      const float* mem = mem_.data() + static_cast<std::size_t>(q) * s_max * hl;
      float* dmem = dmem_.data() + static_cast<std::size_t>(q) * s_max * hl;
      const float* a = attn_.data() + static_cast<std::size_t>(p) * s_max;
      const float* dctx = dctx_.data() + static_cast<std::size_t>(p) * hl;
      float* dout = dout_.data() + static_cast<std::size_t>(p) * hl;
      float* dps = dp;
      if (mlen_[q] > 64) {
        dp_big.resize(mlen_[q]);
        dps = dp_big.data();
      }
      float sum = 0;
      for (int s = 0; s < mlen_[q]; ++s) {
        float dot = 0;
        for (int j = 0; j < hl; ++j) dot += dctx[j] * mem[s * hl + j];
        dps[s] = dot;
        sum += a[s] * dot;
      }
      for (int s = 0; s < mlen_[q]; ++s) {
        const float ds = a[s] * (dps[s] - sum);
        for (int j = 0; j < hl; ++j) {
          dmem[s * hl + j] += a[s] * dctx[j] + ds * out[j];
          dout[j] += ds * mem[s * hl + j];
        }
      }
    }
    return Backward(total / tokens);
  }

  // The decoder LSTM's backward pass from dout_; returns `loss`.
  double Backward(double loss) {
    dec_.dh.assign(dorder_.size() * l_.hl, 0.0f);
    dec_.dc.assign(dec_.dh.size(), 0.0f);
    dec_.Backward(P(l_.demb), P(l_.dwx), P(l_.dwh), dout_.data(), G(l_.demb), G(l_.dwx), G(l_.dwh), G(l_.db));
    return loss;
  }

  Layout l_;
  std::vector<float> w_, g_;
  Mlp mlp_;
  Lstm enc_, dec_;
  std::vector<float> x_, y_, dz_, e_, de_, h0_, c0_, mem_, dmem_, denc_out_;
  std::vector<float> attn_, ctx_, comb_, logits_, dpre_, dout_, dctx_;
  std::vector<float> hin_, dhin_, dweight_, pcount_, ctxw_, drow_, expbuf_;
  std::vector<int> dorder_, mlen_, prow_, enc_of_, stamp_;
  std::vector<int32_t> target_;
  int slots_ = 1;
};

// torch.optim.RMSprop defaults (alpha 0.99, eps 1e-8, no momentum, not centred), 8 parameters
// at a time. Square root and division are correctly rounded in every lane, so each parameter
// gets the bits the scalar loop gives. Zeroes the gradient for the next step.
// The body for one instruction set: SQRT8(v) is its 8-lane square root.
#define MLINK_RMSPROP_BODY(SQRT8)                                                    \
  const float alpha = 0.99f, one_minus = static_cast<float>(1.0 - 0.99), eps = 1e-8f; \
  std::size_t i = 0;                                                                  \
  for (; i + 8 <= n; i += 8) {                                                        \
    const V8 gv = Load(g + i);                                                        \
    const V8 s = Load(sq + i) * alpha + one_minus * gv * gv;                          \
    Store(sq + i, s);                                                                 \
    Store(p + i, Load(p + i) + -lr * (gv / (SQRT8(s) + eps)));                        \
    Store(g + i, V8{});                                                               \
  }                                                                                   \
  for (; i < n; ++i) {                                                                \
    sq[i] = sq[i] * alpha + one_minus * g[i] * g[i];                                  \
    p[i] = p[i] + -lr * (g[i] / (std::sqrt(sq[i]) + eps));                            \
    g[i] = 0.0f;                                                                      \
  }

#define MLINK_SQRT_AVX(v) ((V8)_mm256_sqrt_ps((__m256)(v)))
__attribute__((target("avx2"))) void RmspropAvx2(float* p, float* sq, float* g, std::size_t n, float lr) {
  MLINK_RMSPROP_BODY(MLINK_SQRT_AVX)
}
MLINK_INLINE V8 SqrtSse(V8 x) {
  __m128 half[2];
  std::memcpy(half, &x, sizeof x);
  half[0] = _mm_sqrt_ps(half[0]);
  half[1] = _mm_sqrt_ps(half[1]);
  std::memcpy(&x, half, sizeof x);
  return x;
}
void RmspropBase(float* p, float* sq, float* g, std::size_t n, float lr) { MLINK_RMSPROP_BODY(SqrtSse) }
#undef MLINK_SQRT_AVX
#undef MLINK_RMSPROP_BODY

void RmspropStep(std::vector<float>* params, std::vector<float>* grad, std::vector<float>* square_avg, float lr) {
  (kAvx2 ? RmspropAvx2 : RmspropBase)(params->data(), square_avg->data(), grad->data(), params->size(), lr);
}

}  // namespace

bool FastTrainable(const LinkSpec& spec) { return spec.dropout <= 0; }

void SmallGemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float beta,
               float* c, int ldc) {
  Gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

Result<double> FastLossAndGrad(const LinkSpec& spec, const FlatParams& params, const Column& x, const Column& y,
                               const std::vector<std::size_t>& rows, std::vector<float>* grad) {
  MLINK_ASSIGN_OR_RETURN(Layout layout, MakeLayout(spec, params));
  MLINK_ASSIGN_OR_RETURN(Data data, Pack(spec, x, y));
  std::vector<int64_t> idx;
  for (std::size_t r : rows) {
    if (r >= x.rows()) return Status::InvalidArgument("row " + std::to_string(r) + " out of range");
    idx.push_back(static_cast<int64_t>(r));
  }
  if (idx.empty()) return Status::InvalidArgument("no rows");
  Net net(layout, params.data);
  double loss = net.Run(data, idx, true);
  *grad = net.grad();
  return loss;
}

Result<FastTrainResult> FastTrain(const std::vector<LinkSpec>& specs, const std::vector<const Column*>& x,
                                  const std::vector<const Column*>& y, std::vector<FlatParams> init,
                                  const TrainOptions& o, int threads) {
  if (o.epochs < 1 || o.batch_size < 1 || !(o.learning_rate > 0) || o.validation_share < 0 ||
      o.validation_share >= 1) {
    return Status::InvalidArgument("train options: epochs >= 1, batch_size >= 1, learning_rate > 0 and "
                                   "validation_share in [0, 1) expected");
  }
  const std::size_t links = specs.size();
  if (links == 0 || x.size() != links || y.size() != links || init.size() != links) {
    return Status::InvalidArgument("fast training: one source, target and parameter set per link expected");
  }
  const int64_t n = static_cast<int64_t>(x[0]->rows());
  std::vector<Data> data;
  std::vector<Net> nets;
  for (std::size_t l = 0; l < links; ++l) {
    if (!FastTrainable(specs[l])) return Status::InvalidArgument("fast training does not cover " + specs[l].Canonical());
    if (static_cast<int64_t>(x[l]->rows()) != n) return Status::InvalidArgument("input columns differ in row count");
    MLINK_ASSIGN_OR_RETURN(Layout layout, MakeLayout(specs[l], init[l]));
    MLINK_ASSIGN_OR_RETURN(Data d, Pack(specs[l], *x[l], *y[l]));
    data.push_back(std::move(d));
    nets.emplace_back(layout, init[l].data);
  }
  if (n < 2) return Status::InvalidArgument("training a link needs at least 2 rows, got " + std::to_string(n));

  // The split and batch order of TrainStacked: one generator, drawn in the same order.
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> train_idx, val_idx;
  SplitRows(n, o.validation_share, rng, &train_idx, &val_idx);
  const int64_t n_val = static_cast<int64_t>(val_idx.size());

  std::vector<std::vector<float>> square(links), best(links);
  std::vector<float> best_val(links, std::numeric_limits<float>::infinity());
  std::vector<int> bad(links, 0);
  std::vector<double> last_train(links, 0);
  for (std::size_t l = 0; l < links; ++l) {
    square[l].assign(nets[l].params().size(), 0.0f);
    best[l] = nets[l].params();
  }
  const float lr = static_cast<float>(o.learning_rate);
  const int64_t nt = static_cast<int64_t>(train_idx.size());
  std::vector<std::vector<int64_t>> batches;
  std::vector<double> sum(links), val(links);
  // One epoch of link l: its mini-batch steps, then its validation loss. Links share nothing
  // but the (read-only) batches, so they may run on different threads.
  auto epoch_of = [&](std::size_t l) {
    sum[l] = 0;
    for (const auto& batch : batches) {
      const double loss = nets[l].Run(data[l], batch, true);
      RmspropStep(&nets[l].params(), &nets[l].grad(), &square[l], lr);
      sum[l] += loss * static_cast<double>(batch.size());
    }
    if (n_val > 0) val[l] = nets[l].Run(data[l], val_idx, false);
  };
  const int workers = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(std::max(1, threads)), links));
  int epoch = 0;
  for (; epoch < o.epochs; ++epoch) {
    std::shuffle(train_idx.begin(), train_idx.end(), rng);
    batches.clear();
    for (int64_t start = 0; start < nt; start += o.batch_size) {
      batches.emplace_back(train_idx.begin() + start, train_idx.begin() + std::min<int64_t>(nt, start + o.batch_size));
    }
    if (workers <= 1) {
      for (std::size_t l = 0; l < links; ++l) epoch_of(l);
    } else {
      std::atomic<std::size_t> next{0};
      std::atomic<bool> failed{false};
      auto work = [&] {
        try {
          for (std::size_t l = next++; l < links; l = next++) epoch_of(l);
        } catch (const std::exception&) {  // (allocation) nothing may leave a worker thread
          failed = true;
          next = links;
        }
      };
      std::vector<std::thread> pool;
      try {
        for (int t = 1; t < workers; ++t) pool.emplace_back(work);
      } catch (const std::exception& e) {
        next = links;
        for (auto& th : pool) th.join();
        return Status::Internal(std::string("fast training: starting threads: ") + e.what());
      }
      work();
      for (auto& th : pool) th.join();
      if (failed) return Status::Internal("fast training: a training thread failed (out of memory?)");
    }
    double mean = 0;
    for (std::size_t l = 0; l < links; ++l) mean += last_train[l] = sum[l] / static_cast<double>(nt);
    if (o.on_epoch) o.on_epoch(epoch + 1, o.epochs, mean / static_cast<double>(links));
    if (n_val == 0) continue;
    bool all_bad = true;
    for (std::size_t l = 0; l < links; ++l) {
      const float v = static_cast<float>(val[l]);
      if (v < best_val[l]) {
        best_val[l] = v;
        bad[l] = 0;
        if (o.restore_best) best[l] = nets[l].params();
      } else {
        ++bad[l];
      }
      all_bad = all_bad && bad[l] >= o.patience;
    }
    if (all_bad) {
      ++epoch;
      break;
    }
  }
  FastTrainResult out;
  out.validation_rows.assign(val_idx.begin(), val_idx.end());
  for (std::size_t l = 0; l < links; ++l) {
    FlatParams p = std::move(init[l]);
    p.data = n_val > 0 && o.restore_best ? best[l] : nets[l].params();
    out.params.push_back(std::move(p));
    TrainReport r;
    r.epochs_run = epoch;
    r.train_loss = last_train[l];
    r.train_rows = train_idx.size();
    r.validation_rows = static_cast<std::size_t>(n_val);
    r.validation_loss = n_val > 0 ? best_val[l] : r.train_loss;
    out.reports.push_back(r);
  }
  return out;
}

}  // namespace mlink::link::internal
