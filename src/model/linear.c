/* The projections of a block: base weight (fp32), bias, and — through
 * model/lora.c — an optional adapter. Forward and backward side by side. */
#include "model/lora.h"

#include <string.h>

static const char *const LINEAR_NAMES[WHET_LIN_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"};

const char *whet_linear_name(whet_linear_id id)
{
    return id < WHET_LIN_COUNT ? LINEAR_NAMES[id] : "?";
}

typedef struct linear_view {
    float *w, *b;    /* this layer's weight [N, K] and bias [N] (NULL: none) */
    size_t K, N;     /* in, out */
} linear_view;

/* Layer l's weight and bias views in p for projection id. */
static linear_view linear_of(const whet_model_config *c, const whet_model_params *p, size_t l, whet_linear_id id)
{
    size_t C = c->hidden, F = c->ffn, QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim;
    linear_view v = {0};
    float *w = NULL, *b = NULL;
    switch (id) {
    case WHET_LIN_Q: w = p->wq, b = p->bq, v.K = C, v.N = QD; break;
    case WHET_LIN_K: w = p->wk, b = p->bk, v.K = C, v.N = KVD; break;
    case WHET_LIN_V: w = p->wv, b = p->bv, v.K = C, v.N = KVD; break;
    case WHET_LIN_O: w = p->wo, b = p->bo, v.K = QD, v.N = C; break;
    case WHET_LIN_GATE: w = p->w_gate, b = p->b_gate, v.K = C, v.N = F; break;
    case WHET_LIN_UP: w = p->w_up, b = p->b_up, v.K = C, v.N = F; break;
    case WHET_LIN_DOWN: w = p->w_down, b = p->b_down, v.K = F, v.N = C; break;
    default: break;
    }
    v.w = w ? w + l * v.N * v.K : NULL;
    v.b = b ? b + l * v.N : NULL;
    return v;
}

typedef struct bias_job {
    const whet_kernels *k;
    float *y;
    const float *bias;
    size_t n;
} bias_job;

static void bias_rows(void *p, size_t r0, size_t r1)
{
    bias_job *j = p;
    for (size_t r = r0; r < r1; r++)
        j->k->add(j->y + r * j->n, j->y + r * j->n, j->bias, j->n);
}

void whet_linear_forward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                         size_t rows)
{
    (void)a;
    whet_compute *c = m->compute;
    linear_view v = linear_of(&m->cfg, &m->params, l, id);
    whet_gemm g = {.layout = WHET_GEMM_NT, .M = rows, .N = v.N, .K = v.K, .A = in, .lda = v.K, .B = v.w,
                   .ldb = v.K, .C = out, .ldc = v.N};
    whet_compute_sgemm(c, &g);
    if (v.b) {
        size_t grain = 8192 / v.N ? 8192 / v.N : 1;
        bias_job j = {c->kernels, out, v.b, v.N};
        whet_compute_for(c, rows, grain, bias_rows, &j);
    }
}

typedef struct colsum_job {
    float *db;
    const float *dy;
    size_t rows, n;
} colsum_job;

/* db[c] += Σ_r dy[r, c] for a range of columns: each column sums its rows in
 * order, so any split of columns gives the same bits. */
static void colsum_cols(void *p, size_t c0, size_t c1)
{
    colsum_job *j = p;
    for (size_t r = 0; r < j->rows; r++) {
        const float *row = j->dy + r * j->n;
        for (size_t c = c0; c < c1; c++)
            j->db[c] += row[c];
    }
}

void whet_linear_backward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *din, int accumulate_din,
                          const float *dout, const float *in, size_t rows, whet_model_grads *g)
{
    (void)a;
    whet_compute *c = m->compute;
    linear_view v = linear_of(&m->cfg, &m->params, l, id);
    if (din) {
        whet_gemm d = {.layout = WHET_GEMM_NN, .M = rows, .N = v.K, .K = v.N, .A = dout, .lda = v.N, .B = v.w,
                       .ldb = v.K, .C = din, .ldc = v.K, .accumulate = accumulate_din};
        whet_compute_sgemm(c, &d);
    }
    if (g && l >= g->first_layer) {
        linear_view gv = linear_of(&m->cfg, &g->p, l, id);
        if (gv.w) {
            whet_gemm w = {.layout = WHET_GEMM_TN, .M = v.N, .N = v.K, .K = rows, .A = dout, .lda = v.N, .B = in,
                           .ldb = v.K, .C = gv.w, .ldc = v.K, .accumulate = 1};
            whet_compute_sgemm(c, &w);
        }
        if (gv.b) {
            colsum_job j = {gv.b, dout, rows, v.N};
            whet_compute_for(c, v.N, 64, colsum_cols, &j);
        }
    }
}
