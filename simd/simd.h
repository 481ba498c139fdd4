/* whet's kernel library: pure functions over raw buffers, one table of
 * function pointers per instruction set, chosen once at start.
 *
 * Rules every kernel follows (tests/test_kernels_*.c hold them to it):
 *  - no I/O, no allocation; scratch memory comes from the caller;
 *  - all matrices are row-major; shapes are in the comment above each entry;
 *  - a kernel never splits a reduction in a way that depends on how the caller
 *    partitioned the work, so splitting rows, columns or heads across threads
 *    gives bit-identical results for any thread count;
 *  - "+=" in a comment means the kernel accumulates into its output, "=" that
 *    it overwrites it.
 */
#ifndef WHET_SIMD_H
#define WHET_SIMD_H

#include <stddef.h>
#include <stdint.h>

typedef uint16_t whet_bf16; /* bfloat16 bits: the top half of an IEEE float */
typedef uint16_t whet_f16;  /* IEEE binary16 bits */

typedef enum whet_isa {
    WHET_ISA_SCALAR = 0,
    WHET_ISA_AVX2,   /* x86-64 AVX2 + FMA + F16C */
    WHET_ISA_AVX512, /* x86-64 AVX-512 F/BW/VL/DQ (+ AVX512_BF16 when present) */
    WHET_ISA_NEON,   /* AArch64 Advanced SIMD (+ BF16 when present) */
    WHET_ISA_COUNT
} whet_isa;

/* What the CPU and the OS support, as detected at run time. */
typedef struct whet_cpu_features {
    char arch[16];  /* "x86_64", "aarch64" or "unknown" */
    char brand[64]; /* processor brand string, when the CPU reports one */
    /* x86: each flag is set only when the OS also saves the register state */
    int sse2, avx, avx2, fma, f16c;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512_bf16;
    /* AArch64 */
    int asimd, asimd_dotprod, asimd_fp16, arm_bf16, arm_i8mm, sve;
    int sve_vector_bits;
} whet_cpu_features;

/* GEMM in the three layouts training needs. C is M×N; A and B as below.
 *   NT: A is M×K (lda ≥ K), B is N×K (ldb ≥ K):  C = A·Bᵀ  forward, Y = X·Wᵀ, W stored [out,in]
 *   NN: A is M×K (lda ≥ K), B is K×N (ldb ≥ N):  C = A·B   input gradient, dX = dY·W
 *   TN: A is K×M (lda ≥ M), B is K×N (ldb ≥ N):  C = Aᵀ·B  weight gradient, dW = dYᵀ·X
 * C has leading dimension ldc ≥ N. With accumulate, C += product; else C = product.
 * For gemm_bf16, B holds whet_bf16 values, or fp32 values when b_f32 is set; A is
 * fp32. On every ISA the product is bf16(A)·bf16(B) (fp32 operands rounded to nearest
 * even as they are packed) summed in fp32; ISAs differ only in the order of the sums.
 * Every layout is supported. */
typedef enum whet_gemm_layout { WHET_GEMM_NT = 0, WHET_GEMM_NN, WHET_GEMM_TN } whet_gemm_layout;

typedef struct whet_gemm {
    whet_gemm_layout layout;
    size_t M, N, K;
    const float *A;
    size_t lda;
    const void *B; /* const float * for sgemm, const whet_bf16 * for gemm_bf16 */
    size_t ldb;
    float *C;
    size_t ldc;
    int accumulate;
    int b_f32; /* gemm_bf16 only: B holds fp32 values (rounded to bf16 as they are packed),
                * as the weight gradient dW = dYᵀ·X of --compute bf16 needs */
} whet_gemm;

/* AdamW as PyTorch's torch.optim.AdamW computes it (decoupled weight decay):
 *   g = grad·grad_scale
 *   p -= lr·weight_decay·p
 *   m = beta1·m + (1−beta1)·g;   v = beta2·v + (1−beta2)·g²
 *   p -= (lr / bias_correction1) · m / (sqrt(v)/sqrt(bias_correction2) + eps)
 * with bias_correction1 = 1 − beta1^t and bias_correction2 = 1 − beta2^t. */
typedef struct whet_adamw_params {
    float lr, beta1, beta2, eps, weight_decay, grad_scale;
    float bias_correction1, bias_correction2;
} whet_adamw_params;

/* RoPE pairing: HF's rotate_half pairs element i with i + head_dim/2; GGUF/Meta
 * "interleaved" pairs 2i with 2i+1. */
typedef enum whet_rope_pairing { WHET_ROPE_HALF_SPLIT = 0, WHET_ROPE_INTERLEAVED } whet_rope_pairing;

/* The kernel list, once: X(return type, name, parameter list). */
#define WHET_KERNEL_LIST(X)                                                                         \
    /* C (+)= op(A)·op(B) on the sub-block rows [m0,m1) × columns [n0,n1) of C; workspace holds   \
     * gemm_workspace_bytes. Every element of C is summed over k in the same order whatever the   \
     * sub-block, so any split of rows or columns across threads gives identical bits. */         \
    X(void, sgemm, (const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)) \
    X(void, gemm_bf16, (const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)) \
    /* Runs `iterations` rounds of independent FMAs on registers; returns the FLOPs executed.    \
     * `whet cpu` times it to measure the FMA peak. */                                            \
    X(double, fma_peak_loop, (size_t iterations))                                                  \
    /* Conversions, n elements. f32→bf16 and f32→f16 round to nearest even; NaN stays NaN. */     \
    X(void, f32_to_bf16, (whet_bf16 *dst, const float *src, size_t n))                            \
    X(void, bf16_to_f32, (float *dst, const whet_bf16 *src, size_t n))                            \
    X(void, f32_to_f16, (whet_f16 *dst, const float *src, size_t n))                              \
    X(void, f16_to_f32, (float *dst, const whet_f16 *src, size_t n))                              \
    /* y += a·x */                                                                                 \
    X(void, axpy, (float *y, float a, const float *x, size_t n))                                  \
    /* x = a·x */                                                                                  \
    X(void, scale, (float *x, float a, size_t n))                                                 \
    /* y = a + b (y may alias a or b) */                                                          \
    X(void, add, (float *y, const float *a, const float *b, size_t n))                            \
    /* Σ x², accumulated in double */                                                              \
    X(double, sum_squares, (const float *x, size_t n))                                            \
    /* RMSNorm over rows×n: y = x·rstd·weight, rstd = 1/sqrt(mean(x²)+eps); rstd[rows] may be NULL */ \
    X(void, rmsnorm_forward, (float *y, float *rstd, const float *x, const float *weight, size_t rows, size_t n, float eps)) \
    /* dx += ∂L/∂x for rows×n, from dy, x, weight and the saved rstd */                          \
    X(void, rmsnorm_backward_input, (float *dx, const float *dy, const float *x, const float *weight, const float *rstd, size_t rows, size_t n)) \
    /* dweight[c] += Σ_r dy[r,c]·x[r,c]·rstd[r] for columns c in [c0,c1), rows summed in order */ \
    X(void, rmsnorm_backward_weight, (float *dweight, const float *dy, const float *x, const float *rstd, size_t rows, size_t n, size_t c0, size_t c1)) \
    /* LayerNorm over rows×n: y = (x−mean)·rstd·weight + bias; mean/rstd[rows] may be NULL */   \
    X(void, layernorm_forward, (float *y, float *mean, float *rstd, const float *x, const float *weight, const float *bias, size_t rows, size_t n, float eps)) \
    /* dx += ∂L/∂x */                                                                              \
    X(void, layernorm_backward_input, (float *dx, const float *dy, const float *x, const float *weight, const float *mean, const float *rstd, size_t rows, size_t n)) \
    /* dweight[c] += Σ_r dy·x̂, dbias[c] += Σ_r dy, for c in [c0,c1), rows summed in order */     \
    X(void, layernorm_backward_params, (float *dweight, float *dbias, const float *dy, const float *x, const float *mean, const float *rstd, size_t rows, size_t n, size_t c0, size_t c1)) \
    /* Row softmax over rows×n (y may alias x) */                                                  \
    X(void, softmax_forward, (float *y, const float *x, size_t rows, size_t n))                   \
    /* dx = y·(dy − Σ dy·y) per row */                                                             \
    X(void, softmax_backward, (float *dx, const float *dy, const float *y, size_t rows, size_t n)) \
    /* Cross-entropy over a vocabulary chunk: logits is rows×n with leading dimension ld.          \
     * Online log-sum-exp: running_max starts at −inf and running_sum at 0; after the last chunk \
     * lse = running_max + log(running_sum). */                                                   \
    X(void, cross_entropy_lse_update, (float *running_max, float *running_sum, const float *logits, size_t ld, size_t rows, size_t n)) \
    /* dlogits[r,j] = row_scale[r]·(exp(logits[r,j] − lse[r]) − [vocab_offset+j == targets[r]]); \
     * dlogits may alias logits; a negative target only drops the one-hot term. */               \
    X(void, cross_entropy_backward, (float *dlogits, const float *logits, size_t ld, size_t rows, size_t n, size_t vocab_offset, const int32_t *targets, const float *lse, const float *row_scale)) \
    /* h = silu(gate)·up, element-wise over n */                                                   \
    X(void, swiglu_forward, (float *h, const float *gate, const float *up, size_t n))             \
    /* dgate = dh·up·silu'(gate), dup = dh·silu(gate) */                                           \
    X(void, swiglu_backward, (float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n)) \
    /* GELU, tanh form (gelu_new / gelu_pytorch_tanh): y = x/2·(1 + tanh(√(2/π)(x + 0.044715x³))) */ \
    X(void, gelu_forward, (float *y, const float *x, size_t n))                                   \
    /* dx = dy·gelu'(x) */                                                                         \
    X(void, gelu_backward, (float *dx, const float *dy, const float *x, size_t n))                \
    /* RoPE in place on x: tokens × heads × head_dim, token rows token_stride floats apart;       \
     * token t at position positions[t]; cos/sin tables are [position][head_dim/2]. With          \
     * inverse, rotates by −θ: the backward pass applied to the gradient. */                      \
    X(void, rope, (float *x, size_t tokens, size_t heads, size_t head_dim, size_t token_stride, const int32_t *positions, const float *cos_table, const float *sin_table, whet_rope_pairing pairing, int inverse)) \
    /* LoRA's rank-r products, whose narrow side (r, typically 4 to 64) would waste most of a GEMM \
     * tile and whose wide operand a GEMM would pack for a few FLOPs per element. Each fixes its  \
     * order of operations (simd/lowrank_scalar.c spells it out), so every ISA gives the same     \
     * bits, and each output element is computed alone: any split of rows (project) or columns   \
     * (weight_grad) across threads gives identical bits.                                          \
     * y[i·ldy + j] = scale·Σ_k x[i·ldx + k]·w[j·ldw + k] for rows i < rows, j < r, k < K:       \
     * the down projection xs = s·x·Aᵀ, and d(xs) = s·dout·B with w = Bᵀ */                       \
    X(void, lowrank_project, (float *y, size_t ldy, const float *x, size_t ldx, const float *w, size_t ldw, size_t rows, size_t r, size_t K, float scale)) \
    /* dw[j·ldw + c] (+)= Σ_i g[i·ldg + j]·x[i·ldx + c] for j < r and columns c in [c0,c1), rows  \
     * i summed in order: the adapter's weight gradients dA = d(xs)ᵀ·x and dBᵀ = xsᵀ·dout */         \
    X(void, lowrank_weight_grad, (float *dw, size_t ldw, const float *g, size_t ldg, const float *x, size_t ldx, size_t rows, size_t r, size_t c0, size_t c1, int accumulate)) \
    /* AdamW step over n parameters (see whet_adamw_params) */                                     \
    X(void, adamw, (float *param, float *m, float *v, const float *grad, size_t n, const whet_adamw_params *h)) \
    /* Causal attention forward, flash style (online softmax over KV blocks), for query heads    \
     * [h0,h1) of one sequence. Query i ∈ [0,n_q), head h: q + i·q_stride + h·head_dim; key and  \
     * value j ∈ [0,n_kv), KV head g: k/v + j·kv_stride + g·head_dim; query head h reads KV head  \
     * h / (heads/kv_heads) (GQA; heads is a multiple of kv_heads). Query i sits at position    \
     * q_offset + i and attends to keys j ≤ q_offset + i (q_offset = tokens already in a KV cache; \
     * 0 for a full forward; n_kv ≥ q_offset + n_q). out row i, head h (out + i·out_stride +      \
     * h·head_dim) = Σ_j softmax_j(scale·q·k_j)·v_j; keys past the diagonal are never read.       \
     * lse[h·n_q + i] = log Σ_j exp(scale·q·k_j) (natural log, for the backward); lse may be NULL.\
     * out must not overlap q, k or v. Each (head, query) row is computed alone, in key order,    \
     * so any split of heads across threads gives identical bits. */                             \
    X(void, attention_forward, (float *out, float *lse, const float *q, const float *k, const float *v, size_t n_q, size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim, size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t h0, size_t h1)) \
    /* Its backward, flash style, for KV heads [g0,g1) of one sequence (every query head h with  \
     * h / (heads/kv_heads) in [g0,g1)); layouts and strides as attention_forward's, dq like q,  \
     * dk/dv like k/v, dout like out; out and lse are the forward's outputs. P_ij = exp(scale·    \
     * q_i·k_j − lse_i) is recomputed block by block (never stored whole), D_i = dout_i·out_i,    \
     * dS_ij = P_ij·(dout_i·v_j − D_i):  dq_i = scale·Σ_j dS_ij·k_j,  dv_j = Σ_i P_ij·dout_i,        \
     * dk_j = scale·Σ_i dS_ij·q_i (i over every query head of j's group). "=": dq is overwritten  \
     * for those query heads (rows [0,n_q)), dk and dv for those KV heads (rows [0,n_kv); keys no \
     * query sees, j ≥ q_offset + n_q, get 0 and are never read). Any head_dim works; the SIMD    \
     * tiles hold head_dim ≤ 256 on the stack and wider heads take the scalar code. Each KV head  \
     * is computed alone in a fixed order (query heads, then queries, in order), so any split of \
     * [0,kv_heads) across threads gives identical bits. No output may overlap an input. */      \
    X(void, attention_backward, (float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q, const float *k, const float *v, size_t n_q, size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim, size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t g0, size_t g1))

typedef struct whet_kernels {
    whet_isa isa;
    const char *name;           /* "scalar", "avx2", "avx512", "neon" */
    const char *gemm_bf16_kind; /* how gemm_bf16 computes: "vdpbf16ps", "bfdot", "convert" ... */
    size_t gemm_workspace_bytes; /* scratch one sgemm/gemm_bf16 call needs */
    size_t gemm_tile_m, gemm_tile_n; /* micro-tile: split work across threads at multiples of these */
#define WHET_KERNEL_FIELD(ret, name, params) ret(*name) params;
    WHET_KERNEL_LIST(WHET_KERNEL_FIELD)
#undef WHET_KERNEL_FIELD
} whet_kernels;

/* Detects the CPU once (thread-safe) and returns its features. */
const whet_cpu_features *whet_cpu_detect(void);

/* The kernel table for an ISA, or NULL when this build lacks it or the CPU cannot run it. */
const whet_kernels *whet_kernels_for(whet_isa isa);

/* The best table this CPU runs. */
const whet_kernels *whet_kernels_best(void);

/* "scalar" → WHET_ISA_SCALAR ...; returns -1 for an unknown name. */
int whet_isa_from_name(const char *name);
const char *whet_isa_name(whet_isa isa);

#endif
