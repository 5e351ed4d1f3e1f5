/* Exact per-row top-k of a float32 matrix, column indices returned in ascending order.
 *
 * Built and loaded by sae/_native.py (gcc, ctypes); torch.topk is the fallback.
 *
 * Per row:
 * 1. k strided groups (columns j, j+k, j+2k, ...): their maxima are k distinct entries, so
 *    the k-th largest entry is >= the smallest group maximum t, and every top-k entry is >= t.
 *    The group maxima are an elementwise max of the row's k-wide slices (vectorises).
 * 2. One branch-free pass keeps the entries >= t (about 3k of them on typical rows).
 * 3. The k-th largest candidate value T, by quickselect with branch-free passes.
 * 4. One pass over the candidates, still in column order, emits those > T and then as many
 *    equal to T as are needed, lowest column first: exact, deterministic, and already sorted.
 * Rows are split across `threads` pthreads.
 */
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const float *pre;
    int64_t n, k, row0, row1;
    int64_t *cols;
    float *vals;
    int32_t *cand_col; /* scratch: n + 16 entries (the vector path stores 16 at a time) */
    float *cand_val;   /* scratch: n + 16 + k entries (candidates, then the group maxima) */
    float *work;       /* scratch: 4n entries (quickselect ping-pong buffers) */
    int ok;
} job_t;

static void *run_rows(void *arg) {
    job_t *j = (job_t *)arg;
    const int64_t n = j->n, k = j->k;
    float *acc = j->cand_val + n + 16;
    j->ok = 1;
    for (int64_t r = j->row0; r < j->row1; r++) {
        const float *row = j->pre + r * n;
        /* 1. strided group maxima -> t */
        for (int64_t a = 0; a < k; a++) acc[a] = row[a];
        int64_t c0 = k;
        for (; c0 + k <= n; c0 += k)
            for (int64_t a = 0; a < k; a++) acc[a] = row[c0 + a] > acc[a] ? row[c0 + a] : acc[a];
        for (int64_t a = 0; c0 + a < n; a++) acc[a] = row[c0 + a] > acc[a] ? row[c0 + a] : acc[a];
        float t = acc[0];
        for (int64_t a = 1; a < k; a++) t = acc[a] < t ? acc[a] : t;
        /* 2. candidates >= t, in column order */
        int64_t m = 0, nans = 0, c = 0;
        int32_t *cand_col = j->cand_col;
        float *cand_val = j->cand_val;
#if defined(__AVX512F__)
        /* Register compress + full store: compress-to-memory is microcoded on some CPUs. */
        const __m512 tv = _mm512_set1_ps(t);
        __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (; c + 16 <= n; c += 16) {
            __m512 v = _mm512_loadu_ps(row + c);
            __mmask16 keep = _mm512_cmp_ps_mask(v, tv, _CMP_GE_OQ);
            nans += _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0;
            _mm512_storeu_ps(cand_val + m, _mm512_maskz_compress_ps(keep, v));
            _mm512_storeu_si512((void *)(cand_col + m), _mm512_maskz_compress_epi32(keep, idx));
            m += __builtin_popcount((unsigned)keep);
            idx = _mm512_add_epi32(idx, _mm512_set1_epi32(16));
        }
#endif
        for (; c < n; c++) {
            float v = row[c];
            cand_col[m] = (int32_t)c;
            cand_val[m] = v;
            m += v >= t;
            nans += v != v;
        }
        if (nans || m < k) { j->ok = 0; return NULL; } /* torch.topk ranks NaN first: let it */
        /* 3. T = k-th largest candidate value: quickselect, one branch-free pass a round that
         * splits into the part above and the part below the pivot */
        const float *src = cand_val;
        float *hi = j->work, *lo = j->work + n;
        int64_t len = m, need = k;
        float T;
        for (;;) {
            const float pivot = src[len / 2];
            int64_t nh = 0, nl = 0;
            for (int64_t i = 0; i < len; i++) {
                float v = src[i];
                hi[nh] = v;
                lo[nl] = v;
                nh += v > pivot;
                nl += v < pivot;
            }
            if (nh >= need) {                 /* the k-th largest is above the pivot */
                len = nh;
                src = hi;
                hi = (hi == j->work) ? j->work + 2 * n : j->work;
            } else if (len - nl >= need) {    /* it is the pivot */
                T = pivot;
                break;
            } else {                          /* below: what is >= pivot is all in the top k */
                need -= len - nl;
                len = nl;
                src = lo;
                lo = (lo == j->work + n) ? j->work + 3 * n : j->work + n;
            }
        }
        int64_t above = 0;
        for (int64_t i = 0; i < m; i++) above += cand_val[i] > T;
        /* 4. emit, column order kept */
        int64_t ties = k - above, o = 0;
        int64_t *oc = j->cols + r * k;
        float *ov = j->vals + r * k;
        for (int64_t i = 0; i < m && o < k; i++) {
            float v = cand_val[i];
            if (v > T || (v == T && ties-- > 0)) { oc[o] = cand_col[i]; ov[o] = v; o++; }
        }
    }
    return NULL;
}

/* Returns 0 on success, 1 if some row had fewer than k comparable entries (NaN), 2 on
 * allocation or thread failure. */
int row_topk_sorted(const float *pre, int64_t B, int64_t n, int64_t k, int64_t *cols, float *vals,
                    int threads) {
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    if (B < 256 * threads) threads = 1; /* thread start-up would cost more than it saves */
    job_t jobs[64];
    pthread_t tid[64];
    int started[64] = {0};
    int rc = 0;
    const int64_t stride = 5 * n + 16 + k;
    int32_t *scratch_col = malloc(sizeof(int32_t) * (n + 16) * threads);
    float *scratch_val = malloc(sizeof(float) * stride * threads);
    if (!scratch_col || !scratch_val) { free(scratch_col); free(scratch_val); return 2; }
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job_t){pre, n, k, B * i / threads, B * (i + 1) / threads, cols, vals,
                          scratch_col + (n + 16) * i, scratch_val + stride * i,
                          scratch_val + stride * i + n + 16 + k, 0};
    }
    for (int i = 1; i < threads; i++) {
        started[i] = pthread_create(&tid[i], NULL, run_rows, &jobs[i]) == 0;
        if (!started[i]) run_rows(&jobs[i]);
    }
    run_rows(&jobs[0]);
    for (int i = 1; i < threads; i++)
        if (started[i]) pthread_join(tid[i], NULL);
    for (int i = 0; i < threads; i++)
        if (!jobs[i].ok) rc = 1;
    free(scratch_col);
    free(scratch_val);
    return rc;
}
