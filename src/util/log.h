/* Messages to the user: errors and warnings on stderr, prefixed "whet:". */
#ifndef WHET_LOG_H
#define WHET_LOG_H

#if defined(__GNUC__)
#define WHET_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define WHET_PRINTF(fmt, args)
#endif

/* "whet: <message>\n" on stderr */
void whet_error(const char *fmt, ...) WHET_PRINTF(1, 2);
/* "whet: warning: <message>\n" on stderr */
void whet_warn(const char *fmt, ...) WHET_PRINTF(1, 2);
/* Whether stderr is a terminal (progress lines go there only then). */
int whet_stderr_is_terminal(void);
/* Whether colour is allowed: a terminal and NO_COLOR unset. */
int whet_use_color(void);

#endif
