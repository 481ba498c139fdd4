#include "tok/text_stream.h"

#include <string.h>

/* ---- streaming ------------------------------------------------------------------ */

/* Bytes of the UTF-8 sequence a lead byte starts; 0 for a byte that starts none. */
static size_t utf8_length(unsigned char b)
{
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xF0 && b <= 0xF4)
        return 4;
    return 0;
}

/* Whether b may be byte i (≥ 1) of a sequence led by `lead` (no overlongs,
 * surrogates or code points past U+10FFFF). */
static int utf8_continues(unsigned char lead, size_t i, unsigned char b)
{
    unsigned char lo = 0x80, hi = 0xBF;
    if (i == 1) {
        if (lead == 0xE0)
            lo = 0xA0;
        else if (lead == 0xED)
            hi = 0x9F;
        else if (lead == 0xF0)
            lo = 0x90;
        else if (lead == 0xF4)
            hi = 0x8F;
    }
    return b >= lo && b <= hi;
}

static size_t put_replacement(char *out)
{
    memcpy(out, "\xEF\xBF\xBD", 3);
    return 3;
}

size_t whet_utf8_feed(whet_utf8_stream *s, const char *in, size_t len, char *out)
{
    unsigned char old[4];
    size_t n_old = s->n, total = n_old + len, o = 0, i = 0;
    memcpy(old, s->pending, n_old);
    s->n = 0;
#define BYTE_AT(k) ((k) < n_old ? old[(k)] : (unsigned char)in[(k) - n_old])
    while (i < total) {
        unsigned char b = BYTE_AT(i);
        size_t need = utf8_length(b);
        if (need == 1) {
            out[o++] = (char)b;
            i++;
            continue;
        }
        if (need == 0) {
            o += put_replacement(out + o);
            i++;
            continue;
        }
        size_t j = 1;
        while (j < need && i + j < total && utf8_continues(b, j, BYTE_AT(i + j)))
            j++;
        if (j == need) {
            for (size_t k = 0; k < need; k++)
                out[o++] = (char)BYTE_AT(i + k);
            i += need;
        } else if (i + j == total) { /* unfinished: keep it for the next piece */
            for (size_t k = 0; k < j; k++)
                s->pending[k] = BYTE_AT(i + k);
            s->n = j;
            break;
        } else { /* the maximal invalid subpart becomes one U+FFFD */
            o += put_replacement(out + o);
            i += j;
        }
    }
#undef BYTE_AT
    return o;
}

size_t whet_utf8_flush(whet_utf8_stream *s, char *out)
{
    size_t o = s->n ? put_replacement(out) : 0;
    s->n = 0;
    return o;
}

static long find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0 || m > n)
        return -1;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return (long)i;
    return -1;
}

size_t whet_stop_scan(const char *held, size_t len, char *const *stops, size_t n_stops, long *stop_at)
{
    long first = -1;
    for (size_t i = 0; i < n_stops; i++) {
        long at = find_bytes(held, len, stops[i], strlen(stops[i]));
        if (at >= 0 && (first < 0 || at < first))
            first = at;
    }
    *stop_at = first;
    if (first >= 0)
        return (size_t)first;
    size_t hold = 0;
    for (size_t i = 0; i < n_stops; i++) {
        size_t m = strlen(stops[i]);
        for (size_t k = m > 0 ? (m - 1 < len ? m - 1 : len) : 0; k > hold; k--)
            if (memcmp(held + len - k, stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return len - hold;
}
