#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void whet_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("whet: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void whet_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("whet: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int whet_stderr_is_terminal(void)
{
    return isatty(STDERR_FILENO);
}

int whet_use_color(void)
{
    const char *no_color = getenv("NO_COLOR");
    return whet_stderr_is_terminal() && !(no_color && *no_color);
}
