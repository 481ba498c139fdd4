/* Assertion scorers: a generated text in, a score in [0, 1] out. Binary
 * checks score 0 or 1; f1 and exec may score in between (min_score turns
 * them binary). "not_" gives 1 - score. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "eval/eval.h"

#include "tok/text_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXEC_MAX_STDOUT (64 << 10)

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_punct(unsigned char c)
{
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

char *whet_eval_normalize(const char *s, size_t len, unsigned flags, size_t *out_len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    int pending_space = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((flags & WHET_NORM_PUNCT) && is_punct(ch))
            continue;
        if ((flags & WHET_NORM_LOWER) && ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch - 'A' + 'a');
        if ((flags & WHET_NORM_WS) && is_ws(ch)) {
            pending_space = o > 0;
            continue;
        }
        if (pending_space) {
            out[o++] = ' ';
            pending_space = 0;
        }
        out[o++] = (char)ch;
    }
    size_t begin = 0;
    if (flags & (WHET_NORM_TRIM | WHET_NORM_WS)) {
        while (o > 0 && is_ws((unsigned char)out[o - 1]))
            o--;
        while (begin < o && is_ws((unsigned char)out[begin]))
            begin++;
    }
    memmove(out, out + begin, o - begin);
    o -= begin;
    out[o] = 0;
    *out_len = o;
    return out;
}

static const char *find(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0)
        return hay;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

/* Code points of UTF-8 text (each byte that starts no valid sequence counts
 * as one): the units of levenshtein and length. */
static size_t decode_units(const char *s, size_t n, uint32_t *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        size_t need = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 1;
        uint32_t cp = need == 1 ? b : b & (0x7Fu >> need);
        size_t j = 1;
        while (j < need && i + j < n && ((unsigned char)s[i + j] & 0xC0) == 0x80) {
            cp = cp << 6 | ((unsigned char)s[i + j] & 0x3F);
            j++;
        }
        if (j < need)
            cp = b | 0x80000000u, j = 1; /* a stray byte: a unit of its own, unequal to any code point */
        if (out)
            out[k] = cp;
        k++;
        i += j;
    }
    return k;
}

size_t whet_eval_levenshtein(const char *a, size_t na, const char *b, size_t nb)
{
    size_t n = decode_units(a, na, NULL), m = decode_units(b, nb, NULL);
    uint32_t *x = malloc((n + 1) * sizeof *x), *y = malloc((m + 1) * sizeof *y);
    size_t *row = malloc((m + 1) * sizeof *row);
    size_t result = SIZE_MAX;
    if (x && y && row) {
        decode_units(a, na, x);
        decode_units(b, nb, y);
        for (size_t j = 0; j <= m; j++)
            row[j] = j;
        for (size_t i = 1; i <= n; i++) {
            size_t diag = row[0];
            row[0] = i;
            for (size_t j = 1; j <= m; j++) {
                size_t up = row[j];
                size_t best = diag + (x[i - 1] != y[j - 1]);
                if (up + 1 < best)
                    best = up + 1;
                if (row[j - 1] + 1 < best)
                    best = row[j - 1] + 1;
                row[j] = best;
                diag = up;
            }
        }
        result = row[m];
    }
    free(x);
    free(y);
    free(row);
    return result;
}

/* SQuAD's answer normalisation: lowercase, punctuation removed, the articles
 * a/an/the dropped, split on whitespace. Returns the token count; tokens
 * point into *buf. */
static size_t squad_tokens(const char *s, size_t n, char **buf, const char ***tokens)
{
    size_t len = 0;
    *tokens = NULL;
    *buf = whet_eval_normalize(s, n, WHET_NORM_LOWER | WHET_NORM_PUNCT | WHET_NORM_WS, &len);
    if (!*buf || !(*tokens = malloc((len / 2 + 2) * sizeof **tokens)))
        return SIZE_MAX;
    size_t k = 0;
    for (char *p = *buf; *p;) {
        char *end = strchr(p, ' ');
        if (end)
            *end = 0;
        if (strcmp(p, "a") != 0 && strcmp(p, "an") != 0 && strcmp(p, "the") != 0)
            (*tokens)[k++] = p;
        if (!end)
            break;
        p = end + 1;
    }
    return k;
}

double whet_eval_token_f1(const char *pred, size_t np, const char *ref, size_t nr)
{
    char *pb = NULL, *rb = NULL;
    const char **pt = NULL, **rt = NULL;
    size_t n = squad_tokens(pred, np, &pb, &pt), m = squad_tokens(ref, nr, &rb, &rt);
    double f1 = 0;
    unsigned char *used = m != SIZE_MAX ? calloc(m + 1, 1) : NULL;
    if (n != SIZE_MAX && m != SIZE_MAX && used) {
        if (n == 0 || m == 0) {
            f1 = n == m;
        } else {
            size_t common = 0;
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < m; j++)
                    if (!used[j] && strcmp(pt[i], rt[j]) == 0) {
                        used[j] = 1;
                        common++;
                        break;
                    }
            if (common) {
                double p = (double)common / (double)n, r = (double)common / (double)m;
                f1 = 2 * p * r / (p + r);
            }
        }
    }
    free(used);
    free(pb);
    free(rb);
    free(pt);
    free(rt);
    return f1;
}

int whet_eval_json_equal(const whet_json *x, const whet_json *y, int subset)
{
    if (x->type != y->type)
        return 0;
    switch (x->type) {
    case WHET_JSON_NUMBER: return x->u.number.value == y->u.number.value;
    case WHET_JSON_STRING:
        return x->u.string.len == y->u.string.len && memcmp(x->u.string.chars, y->u.string.chars, x->u.string.len) == 0;
    case WHET_JSON_ARRAY:
        if (x->u.array.count != y->u.array.count)
            return 0;
        for (size_t i = 0; i < x->u.array.count; i++)
            if (!whet_eval_json_equal(&x->u.array.items[i], &y->u.array.items[i], subset))
                return 0;
        return 1;
    case WHET_JSON_OBJECT:
        if (!subset && x->u.object.count != y->u.object.count)
            return 0;
        for (size_t i = 0; i < x->u.object.count; i++) {
            const whet_json_member *m = &x->u.object.members[i];
            const whet_json *other = whet_json_get_len(y, m->key, m->key_len);
            if (!other || !whet_eval_json_equal(&m->value, other, subset))
                return 0;
        }
        return 1;
    default: return 1;
    }
}

static char *dupf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static char *dupf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return strdup(buf);
}

/* Both sides normalised alike, then compared by `op`. */
static int compare_normalized(const whet_eval_assert *a, const char *out, size_t len, const char *want,
                              size_t want_len, int (*op)(const char *, size_t, const char *, size_t), int *result)
{
    size_t nl, wl;
    char *n = whet_eval_normalize(out, len, a->norm, &nl), *w = whet_eval_normalize(want, want_len, a->norm, &wl);
    if (n && w)
        *result = op(n, nl, w, wl);
    free(n);
    free(w);
    return n && w ? 0 : -1;
}

static int op_equals(const char *s, size_t n, const char *w, size_t m)
{
    return n == m && memcmp(s, w, n) == 0;
}
static int op_prefix(const char *s, size_t n, const char *w, size_t m)
{
    return n >= m && memcmp(s, w, m) == 0;
}
static int op_contains(const char *s, size_t n, const char *w, size_t m)
{
    return find(s, n, w, m) != NULL;
}

static int score_regex(const whet_eval_assert *a, const char *out, size_t len, double *score, char **detail)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(a->regex, NULL);
    if (!md)
        return -1;
    int rc = pcre2_match(a->regex, (PCRE2_SPTR)out, len, 0, 0, md, NULL);
    *score = rc > 0;
    if (rc > 0 && a->has_target) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        int matched = 0;
        if ((uint32_t)a->group < pcre2_get_ovector_count(md) && ov[2 * a->group] != PCRE2_UNSET) {
            const char *cap = out + ov[2 * a->group];
            size_t cap_len = ov[2 * a->group + 1] - ov[2 * a->group];
            if (compare_normalized(a, cap, cap_len, a->target, a->target_len, op_equals, &matched) != 0) {
                pcre2_match_data_free(md);
                return -1;
            }
            *detail = dupf("captured \"%.*s\"", (int)(cap_len > 200 ? 200 : cap_len), cap);
        } else {
            *detail = dupf("group %d did not take part in the match", a->group);
        }
        *score = matched;
    } else if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(rc, msg, sizeof msg);
        *detail = dupf("match error: %s", (const char *)msg);
    }
    pcre2_match_data_free(md);
    return 0;
}

static int score_json(const whet_eval_assert *a, const char *out, size_t len, double *score, char **detail)
{
    size_t tl;
    char *t = whet_eval_normalize(out, len, WHET_NORM_TRIM, &tl);
    if (!t)
        return -1;
    whet_json_doc *doc = NULL;
    whet_err pe = {{0}};
    *score = 0;
    if (whet_json_parse(&doc, t, tl, "output", NULL, &pe) != 0) {
        *detail = strdup(pe.msg);
    } else if (a->type == WHET_ASSERT_JSON_VALID) {
        *score = 1;
    } else {
        *score = whet_eval_json_equal(a->json, whet_json_root(doc), a->type == WHET_ASSERT_JSON_SUBSET);
    }
    whet_json_free(doc);
    free(t);
    return 0;
}

/* ---- exec --------------------------------------------------------------------- */

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Starts `sh -c 'cd "$1" && eval "$2"'` with stdin/stdout on the pipes, an
 * empty signal mask, SIGPIPE at its default and WHET_CASE in the
 * environment. Returns 0 or an errno value. */
static int spawn_validator(pid_t *pid, const char *command, const char *dir, const char *case_json,
                           const int in_pipe[2], const int out_pipe[2])
{
    extern char **environ;
    size_t n_env = 0;
    while (environ[n_env])
        n_env++;
    char **envp = malloc((n_env + 2) * sizeof *envp);
    size_t case_len = strlen(case_json);
    char *case_var = malloc(case_len + sizeof "WHET_CASE=");
    if (!envp || !case_var) {
        free(envp), free(case_var);
        return ENOMEM;
    }
    memcpy(case_var, "WHET_CASE=", 10);
    memcpy(case_var + 10, case_json, case_len + 1);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "WHET_CASE=", 10) != 0)
            envp[k++] = environ[i];
    envp[k++] = case_var;
    envp[k] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
    posix_spawn_file_actions_addclose(&fa, in_pipe[0]);
    posix_spawn_file_actions_addclose(&fa, in_pipe[1]);
    posix_spawn_file_actions_addclose(&fa, out_pipe[0]);
    posix_spawn_file_actions_addclose(&fa, out_pipe[1]);
    sigset_t none, pipe_only;
    sigemptyset(&none);
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &pipe_only);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"sh", "-c", "cd \"$1\" || exit 126; eval \"$2\"", "sh", (char *)(dir ? dir : "."),
                    (char *)command, NULL};
    fflush(NULL);
    int rc = posix_spawn(pid, "/bin/sh", &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(envp);
    free(case_var);
    return rc;
}

/* Runs `sh -c value` in dir with the output on its stdin and the case in
 * WHET_CASE; its exit status and what it printed decide the score. A
 * validator that stops reading early must not kill us with SIGPIPE: the
 * signal is blocked in this thread while we write, and a pending one is
 * consumed before it is unblocked. */
static int score_exec(const whet_eval_assert *a, const whet_eval_case *c, const char *dir, const char *out,
                      size_t len, double *score, char **detail, whet_err *e)
{
    int in_pipe[2], out_pipe[2];
    if (pipe(in_pipe) != 0)
        return whet_fail(e, "exec: pipe: %s", strerror(errno));
    if (pipe(out_pipe) != 0) {
        close(in_pipe[0]);
        close(in_pipe[1]);
        return whet_fail(e, "exec: pipe: %s", strerror(errno));
    }
    char *case_json = strndup(c->line_text ? c->line_text : "{}", c->line_text ? c->line_len : 2);
    if (!case_json) {
        close(in_pipe[0]), close(in_pipe[1]), close(out_pipe[0]), close(out_pipe[1]);
        return whet_fail(e, "out of memory");
    }
    /* posix_spawn, not fork: a trainer holding gigabytes would copy its page
     * tables for every case (measured: 0.8 s per validator run inside
     * whet train against 0.02 s from whet eval). */
    pid_t pid = -1;
    int rc = spawn_validator(&pid, a->value, dir, case_json, in_pipe, out_pipe);
    if (rc != 0) {
        free(case_json);
        close(in_pipe[0]), close(in_pipe[1]), close(out_pipe[0]), close(out_pipe[1]);
        return whet_fail(e, "exec: cannot start /bin/sh: %s", strerror(rc));
    }
    free(case_json);
    close(in_pipe[0]);
    close(out_pipe[1]);
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigset_t pending;
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE);
    fcntl(in_pipe[1], F_SETFL, fcntl(in_pipe[1], F_GETFL) | O_NONBLOCK);

    char *got = malloc(EXEC_MAX_STDOUT + 1);
    size_t n_got = 0, written = 0;
    int in_fd = in_pipe[1], out_fd = out_pipe[0], timed_out = 0;
    if (len == 0) {
        close(in_fd);
        in_fd = -1;
    }
    double deadline = seconds_now() + a->timeout;
    while (out_fd >= 0 && got) {
        struct pollfd fds[2];
        int nf = 0;
        fds[nf++] = (struct pollfd){out_fd, POLLIN, 0};
        if (in_fd >= 0)
            fds[nf++] = (struct pollfd){in_fd, POLLOUT, 0};
        double left = deadline - seconds_now();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        int r = poll(fds, (nfds_t)nf, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        if (nf == 2 && fds[1].revents) {
            ssize_t w = write(in_fd, out + written, len - written);
            if (w > 0)
                written += (size_t)w;
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                written = len; /* EPIPE: the validator stopped reading */
            if (written == len) {
                close(in_fd);
                in_fd = -1;
            }
        }
        if (fds[0].revents) {
            char buf[4096];
            ssize_t rd = read(out_fd, buf, sizeof buf);
            if (rd > 0) {
                size_t keep = n_got + (size_t)rd > EXEC_MAX_STDOUT ? EXEC_MAX_STDOUT - n_got : (size_t)rd;
                memcpy(got + n_got, buf, keep);
                n_got += keep;
            } else if (rd == 0 || (errno != EINTR && errno != EAGAIN)) {
                close(out_fd);
                out_fd = -1;
            }
        }
    }
    if (in_fd >= 0)
        close(in_fd);
    if (out_fd >= 0)
        close(out_fd);
    if (timed_out)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!got)
        return whet_fail(e, "out of memory");
    got[n_got] = 0;

    *score = 0;
    if (timed_out) {
        *detail = dupf("timed out after %g s", a->timeout);
    } else if (WIFSIGNALED(status)) {
        *detail = dupf("killed by signal %d", WTERMSIG(status));
    } else if (WEXITSTATUS(status) != 0) {
        *detail = dupf("exit status %d%s%.*s", WEXITSTATUS(status), n_got ? ": " : "",
                       (int)(n_got > 200 ? 200 : n_got), got);
    } else {
        char *end;
        const char *p = got;
        while (is_ws((unsigned char)*p))
            p++;
        double v = strtod(p, &end);
        while (is_ws((unsigned char)*end))
            end++;
        if (end > p && *end == 0 && isfinite(v)) {
            *score = v < 0 ? 0 : v > 1 ? 1 : v;
            *detail = dupf("score %g", v);
        } else {
            *score = 1;
        }
    }
    free(got);
    return 0;
}

int whet_eval_assert_score(const whet_eval_assert *a, const whet_eval_case *c, const char *dir, const char *out,
                           size_t len, double *score, char **detail, whet_err *e)
{
    *detail = NULL;
    *score = 0;
    int ok = 0, rc = 0;
    switch (a->type) {
    case WHET_ASSERT_EQUALS: rc = compare_normalized(a, out, len, a->value, a->value_len, op_equals, &ok); break;
    case WHET_ASSERT_PREFIX: rc = compare_normalized(a, out, len, a->value, a->value_len, op_prefix, &ok); break;
    case WHET_ASSERT_CONTAINS: rc = compare_normalized(a, out, len, a->value, a->value_len, op_contains, &ok); break;
    case WHET_ASSERT_ICONTAINS: {
        whet_eval_assert lowered = *a;
        lowered.norm |= WHET_NORM_LOWER;
        rc = compare_normalized(&lowered, out, len, a->value, a->value_len, op_contains, &ok);
        break;
    }
    case WHET_ASSERT_CONTAINS_ANY:
    case WHET_ASSERT_CONTAINS_ALL: {
        int all = a->type == WHET_ASSERT_CONTAINS_ALL;
        ok = all;
        for (size_t i = 0; rc == 0 && i < a->n_values; i++) {
            int has = 0;
            rc = compare_normalized(a, out, len, a->values[i], a->values_len[i], op_contains, &has);
            if (all && !has) {
                ok = 0;
                *detail = dupf("lacks \"%.100s\"", a->values[i]);
                break;
            }
            if (!all && has) {
                ok = 1;
                break;
            }
        }
        break;
    }
    case WHET_ASSERT_REGEX:
        rc = score_regex(a, out, len, score, detail);
        ok = *score > 0;
        break;
    case WHET_ASSERT_LEVENSHTEIN: {
        size_t nl, wl, d = SIZE_MAX;
        char *n = whet_eval_normalize(out, len, a->norm, &nl), *w = whet_eval_normalize(a->value, a->value_len, a->norm, &wl);
        if (n && w)
            d = whet_eval_levenshtein(n, nl, w, wl);
        free(n);
        free(w);
        if (d == SIZE_MAX)
            rc = -1;
        else
            *detail = dupf("distance %zu", d);
        ok = d <= a->max_distance;
        break;
    }
    case WHET_ASSERT_F1:
        *score = whet_eval_token_f1(out, len, a->value, a->value_len);
        *detail = dupf("f1 %.4f", *score);
        break;
    case WHET_ASSERT_JSON_VALID:
    case WHET_ASSERT_JSON_MATCH:
    case WHET_ASSERT_JSON_SUBSET:
        rc = score_json(a, out, len, score, detail);
        ok = *score > 0;
        break;
    case WHET_ASSERT_LENGTH: {
        size_t n = decode_units(out, len, NULL);
        ok = n >= a->min_len && n <= a->max_len;
        *detail = dupf("%zu characters", n);
        break;
    }
    case WHET_ASSERT_EXEC: rc = score_exec(a, c, dir, out, len, score, detail, e); break;
    default: return whet_fail(e, "unknown assertion type %d", (int)a->type);
    }
    if (rc != 0) {
        free(*detail);
        *detail = NULL;
        return a->type == WHET_ASSERT_EXEC ? -1 : whet_fail(e, "out of memory scoring an assertion");
    }
    if (*detail) {
        /* a validator's message or a cut capture may not be valid UTF-8, which
         * the reports (JSON) must be */
        size_t n = strlen(*detail);
        char *valid = malloc(3 * (n + 4) + 1);
        if (valid) {
            whet_utf8_stream u = {{0}, 0};
            size_t o = whet_utf8_feed(&u, *detail, n, valid);
            o += whet_utf8_flush(&u, valid + o);
            valid[o] = 0;
            free(*detail);
            *detail = valid;
        }
    }
    if (a->type != WHET_ASSERT_F1 && a->type != WHET_ASSERT_EXEC)
        *score = ok;
    else if (a->min_score >= 0)
        *score = *score >= a->min_score;
    if (a->negate)
        *score = 1 - *score;
    return 0;
}
