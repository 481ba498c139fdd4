/* Streaming generated text: UTF-8 characters split across pieces, and stop
 * strings that may arrive in pieces (whet generate, whet eval). */
#ifndef WHET_TEXT_STREAM_H
#define WHET_TEXT_STREAM_H

#include <stddef.h>

/* Streaming text that arrives in pieces that may split a UTF-8 character:
 * whet_utf8_feed appends the bytes that form complete characters to out (at
 * most 3·(len + 3) bytes: each invalid byte becomes U+FFFD, as
 * whet_tokenizer_decode does) and keeps an unfinished character's bytes for
 * the next piece; whet_utf8_flush ends the stream (an unfinished character
 * becomes U+FFFD). Both return the bytes written. */
typedef struct whet_utf8_stream {
    unsigned char pending[4];
    size_t n;
} whet_utf8_stream;

size_t whet_utf8_feed(whet_utf8_stream *s, const char *in, size_t len, char *out);
size_t whet_utf8_flush(whet_utf8_stream *s, char *out);

/* Stop strings in streamed text: `held` is text not printed yet. Returns the
 * bytes of it that are safe to print now; *stop_at is set to the offset of
 * the first (leftmost) stop string found in it, or to -1. Bytes that might be
 * the beginning of a stop string are held back until the next call. */
size_t whet_stop_scan(const char *held, size_t len, char *const *stops, size_t n_stops, long *stop_at);

#endif
