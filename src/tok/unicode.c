/* UTF-8, lossy repair, NFC and GPT-2's byte↔character map. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_internal.h"
#include "tok/nfc_tables.h"

/* ---- buffer ---- */

void tok_buf_reserve(tok_buf *b, size_t extra)
{
    if (b->oom || b->cap - b->len > extra)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return;
        }
        cap *= 2;
    }
    char *grown = realloc(b->data, cap);
    if (!grown) {
        b->oom = 1;
        return;
    }
    b->data = grown;
    b->cap = cap;
}

void tok_buf_append(tok_buf *b, const void *data, size_t len)
{
    tok_buf_reserve(b, len);
    if (b->oom)
        return;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0; /* reserve keeps one byte spare */
}

void tok_buf_free(tok_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- UTF-8 ---- */

size_t tok_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    /* The second byte's allowed range depends on the first byte (Unicode
     * Table 3-7): this excludes overlongs, surrogates and > U+10FFFF. */
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        v = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        v = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    v = (v << 6) | (s[1] & 0x3F);
    for (size_t i = 2; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return n;
}

size_t tok_utf8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int tok_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = tok_utf8_decode(u + i, len - i, &cp);
        if (!n)
            return 0;
        i += n;
    }
    return 1;
}

/* Length of the maximal prefix of s[0..len) that starts a well-formed
 * character but is not one (at least 1): the unit replaced by one U+FFFD. */
static size_t invalid_subpart_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 1;
    }
    size_t i = 1;
    if (i < len && i < n && s[i] >= lo && s[i] <= hi) {
        i++;
        while (i < len && i < n && (s[i] & 0xC0) == 0x80)
            i++;
    }
    return i;
}

void tok_utf8_append_lossy(tok_buf *out, const char *s, size_t len)
{
    static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = tok_utf8_decode(u + i, len - i, &cp);
        if (n) {
            i += n;
            continue;
        }
        tok_buf_append(out, s + run, i - run);
        tok_buf_append(out, replacement, 3);
        i += invalid_subpart_len(u + i, len - i);
        run = i;
    }
    tok_buf_append(out, s + run, len - run);
}

/* ---- NFC ---- */

#define HANGUL_S 0xAC00u
#define HANGUL_L 0x1100u
#define HANGUL_V 0x1161u
#define HANGUL_T 0x11A7u
#define HANGUL_L_COUNT 19u
#define HANGUL_V_COUNT 21u
#define HANGUL_T_COUNT 28u
#define HANGUL_N (HANGUL_V_COUNT * HANGUL_T_COUNT)
#define HANGUL_S_COUNT (HANGUL_L_COUNT * HANGUL_N)

static int combining_class(uint32_t cp)
{
    if (cp < 0x300)
        return 0;
    size_t lo = 0, hi = sizeof nfc_ccc_ranges / sizeof nfc_ccc_ranges[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < nfc_ccc_ranges[mid][0])
            hi = mid;
        else if (cp > nfc_ccc_ranges[mid][1])
            lo = mid + 1;
        else
            return (int)nfc_ccc_ranges[mid][2];
    }
    return 0;
}

/* Appends cp's full canonical decomposition to cps (room checked by caller:
 * at most 4 code points, the longest in the table and Hangul's 3). */
static size_t decompose(uint32_t cp, uint32_t *cps)
{
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_S_COUNT) {
        uint32_t s = cp - HANGUL_S;
        cps[0] = HANGUL_L + s / HANGUL_N;
        cps[1] = HANGUL_V + (s % HANGUL_N) / HANGUL_T_COUNT;
        if (s % HANGUL_T_COUNT) {
            cps[2] = HANGUL_T + s % HANGUL_T_COUNT;
            return 3;
        }
        return 2;
    }
    if (cp >= 0xC0) {
        size_t lo = 0, hi = sizeof nfc_decomp_index / sizeof nfc_decomp_index[0];
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (cp < nfc_decomp_index[mid][0])
                hi = mid;
            else if (cp > nfc_decomp_index[mid][0])
                lo = mid + 1;
            else {
                uint32_t off = nfc_decomp_index[mid][1], n = nfc_decomp_index[mid][2];
                memcpy(cps, nfc_decomp_pool + off, n * sizeof *cps);
                return n;
            }
        }
    }
    cps[0] = cp;
    return 1;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_L_COUNT && b >= HANGUL_V && b < HANGUL_V + HANGUL_V_COUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_V_COUNT + (b - HANGUL_V)) * HANGUL_T_COUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_S_COUNT && (a - HANGUL_S) % HANGUL_T_COUNT == 0 && b > HANGUL_T &&
        b < HANGUL_T + HANGUL_T_COUNT)
        return a + (b - HANGUL_T);
    size_t lo = 0, hi = sizeof nfc_compose_pairs / sizeof nfc_compose_pairs[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *p = nfc_compose_pairs[mid];
        if (a < p[0] || (a == p[0] && b < p[1]))
            hi = mid;
        else if (a > p[0] || b > p[1])
            lo = mid + 1;
        else
            return p[2];
    }
    return 0;
}

void tok_nfc_append(tok_buf *out, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    /* Text made only of code points below U+0300 is already NFC: nothing
     * there decomposes into anything but a primary composite of itself, and
     * no combining mark or other second half of a composition is there. */
    size_t i = 0;
    while (i < len && u[i] < 0xCC)
        i++;
    if (i == len) {
        tok_buf_append(out, s, len);
        return;
    }

    /* a character of k bytes decomposes into at most 4 code points */
    if (len > SIZE_MAX / (4 * sizeof(uint32_t)) - 1) {
        out->oom = 1;
        return;
    }
    size_t cap = len * 4 + 4;
    uint32_t *cps = malloc(cap * sizeof *cps);
    int *classes = cps ? malloc(cap * sizeof *classes) : NULL;
    if (!cps || !classes) {
        free(cps);
        out->oom = 1;
        return;
    }
    size_t n = 0;
    for (i = 0; i < len;) {
        uint32_t cp;
        size_t step = tok_utf8_decode(u + i, len - i, &cp);
        if (!step) { /* callers pass valid UTF-8; keep going rather than loop */
            cp = 0xFFFD;
            step = 1;
        }
        i += step;
        size_t k = decompose(cp, cps + n);
        for (size_t j = 0; j < k; j++)
            classes[n + j] = combining_class(cps[n + j]);
        n += k;
    }
    /* Canonical ordering: a stable sort of each run of non-starters by class. */
    for (size_t a = 0; a < n;) {
        if (classes[a] == 0) {
            a++;
            continue;
        }
        size_t b = a;
        while (b < n && classes[b] != 0)
            b++;
        for (size_t x = a + 1; x < b; x++) {
            uint32_t c = cps[x];
            int cc = classes[x];
            size_t y = x;
            while (y > a && classes[y - 1] > cc) {
                cps[y] = cps[y - 1];
                classes[y] = classes[y - 1];
                y--;
            }
            cps[y] = c;
            classes[y] = cc;
        }
        a = b;
    }
    /* Canonical composition, in place: out_n characters kept so far. */
    size_t out_n = 0;
    long starter = -1;
    for (size_t x = 0; x < n; x++) {
        uint32_t c = cps[x];
        int cc = classes[x];
        if (starter >= 0) {
            int last_cc = classes[out_n - 1];
            int blocked = (long)(out_n - 1) != starter && (last_cc == 0 || last_cc >= cc);
            if (!blocked) {
                uint32_t composite = compose(cps[starter], c);
                if (composite) {
                    cps[starter] = composite;
                    continue;
                }
            }
        }
        if (cc == 0)
            starter = (long)out_n;
        cps[out_n] = c;
        classes[out_n] = cc;
        out_n++;
    }
    tok_buf_reserve(out, out_n * 4);
    if (!out->oom) {
        for (size_t x = 0; x < out_n; x++)
            out->len += tok_utf8_encode(cps[x], out->data + out->len);
        out->data[out->len] = 0;
    }
    free(classes);
    free(cps);
}

/* ---- bytes_to_unicode ---- */

static int byte_maps_to_itself(unsigned b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(unsigned char b)
{
    if (byte_maps_to_itself(b))
        return b;
    /* the n-th byte (ascending) that does not map to itself maps to U+0100+n */
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        n += !byte_maps_to_itself(x);
    return 0x100 + n;
}

int tok_cp_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_maps_to_itself(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68)
        return -1;
    unsigned n = cp - 0x100;
    for (unsigned x = 0; x < 256; x++)
        if (!byte_maps_to_itself(x) && n-- == 0)
            return (int)x;
    return -1;
}

int tok_is_whitespace(uint32_t cp)
{
    /* Unicode White_Space, which Rust's char::is_whitespace tests */
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}
