#!/usr/bin/env python3
"""Generates the query-DSL task: questions in English -> queries (GRAMMAR.md).

    python3 datasets/query-dsl/generate.py [OUT_DIR]

writes OUT_DIR/train.jsonl, valid.jsonl, test.jsonl (OpenAI chat format) and
eval.jsonl (the whet eval suite built from test.jsonl); OUT_DIR defaults to
the directory of this script. Python 3 standard library only; the output is
the same bytes on every run and every Python 3 version (the only randomness is
random.Random(SEED).random(), whose sequence Python keeps stable).

A question is assembled from slots (a lead, calculations, filters, grouping,
ordering, time window), each slot picking one of several English phrasings;
the query is assembled from the same choices. Every phrasing list keeps its
last entries out of training ("held out"), and so do a few values (services,
routes, regions): the test set measures three things, tagged in the eval:
  seen_phrasing  phrasings and values of training, in new combinations;
  new_phrasing   at least one held-out phrasing;
  new_value      at least one held-out value (copied from the question).
No test or validation question is also a training question.
"""
import json
import os
import sys

SEED = 20261128
N_TRAIN, N_VALID, N_TEST_PER_KIND = 2400, 150, 40

SYSTEM = "Translate the question into a query of the observability query language."


class Rng:
    """random.Random's MT19937 stream, drawn only through random()."""

    def __init__(self, seed):
        import random
        self.r = random.Random(seed)

    def below(self, n):
        return int(self.r.random() * n)

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, p):
        return self.r.random() < p


# ---- phrasings: [train..., held-out] -- the last HELD_OUT of each list are test-only

class Phrases:
    """A list of phrasings whose last `held` entries are held out of training."""

    def __init__(self, items, held=1):
        self.items = list(items)
        self.held = held if len(items) >= 3 else 0

    def choose(self, g):
        return g.choose_phrase(self)


SERVICES = Phrases(["checkout", "cart", "payments", "auth", "search", "frontend", "inventory", "shipping",
                    "email", "recommendations", "catalog", "gateway", "ledger", "notifications"], held=2)
ROUTES = Phrases(["/api/cart", "/api/checkout", "/login", "/api/search", "/api/orders", "/health",
                  "/api/users", "/api/products", "/api/payments", "/api/refunds", "/api/invoices"], held=2)
REGIONS = Phrases(["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1",
                   "ap-northeast-1", "sa-east-1"], held=1)
METHODS = ["GET", "POST", "PUT", "DELETE"]
DB_SYSTEMS = ["postgres", "mysql", "redis"]
TABLES = Phrases(["orders", "users", "payments", "sessions", "inventory", "carts", "invoices"], held=1)
EXCEPTIONS = Phrases(["timeout", "connection refused", "deadlock", "out of memory", "null pointer",
                      "permission denied", "rate limit"], held=1)
STATUS_CODES = [200, 201, 204, 301, 302, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504]

# numeric fields: (field, noun phrasings)
NUMERIC = {
    "duration_ms": Phrases(["latency", "duration", "response time", "request duration"]),
    "db.duration_ms": Phrases(["database time", "db latency", "database latency", "query time"]),
    "response.size_bytes": Phrases(["response size", "payload size", "bytes returned", "response body size"]),
    "retry.count": Phrases(["retry count", "number of retries", "retries per request"]),
}
# fields counted distinct: (field, plural noun phrasings)
DISTINCT = {
    "user.id": Phrases(["users", "user ids", "customers"]),
    "host.name": Phrases(["hosts", "machines", "servers"]),
    "service.name": Phrases(["services", "service names"]),
    "http.route": Phrases(["routes", "endpoints", "paths"]),
    "region": Phrases(["regions", "cloud regions"]),
}
AGGREGATES = {
    "AVG": Phrases(["the average {f}", "the mean {f}", "average {f}", "the {f} on average"]),
    "P50": Phrases(["the median {f}", "the p50 {f}", "the 50th percentile {f}"]),
    "P90": Phrases(["the p90 {f}", "the 90th percentile {f}", "p90 {f}"]),
    "P95": Phrases(["the p95 {f}", "the 95th percentile {f}", "p95 {f}", "the 95th-percentile {f}"]),
    "P99": Phrases(["the p99 {f}", "the 99th percentile {f}", "p99 {f}", "the tail {f} at p99"]),
    "MAX": Phrases(["the maximum {f}", "the highest {f}", "the max {f}", "the largest {f}"]),
    "MIN": Phrases(["the minimum {f}", "the lowest {f}", "the min {f}", "the smallest {f}"]),
    "SUM": Phrases(["the total {f}", "the sum of {f}", "the summed {f}", "the combined {f}"]),
}
COUNT_PHRASES = Phrases(["the number of requests", "the request count", "how many requests", "the count of events",
                         "how many events", "the number of spans", "the volume of requests"])
DISTINCT_PHRASES = Phrases(["the number of distinct {f}", "how many unique {f}", "the count of unique {f}",
                            "the number of different {f}"])
LEADS = Phrases(["", "Show me ", "What is ", "Give me ", "Find ", "Get ", "I want ", "Can you show ",
                 "Tell me ", "Please find "], held=2)

HOW_MANY_LEADS = Phrases(["", "", "Count ", "Tell me "])  # before "how many ..."

GROUPS = {
    "service.name": Phrases(["by service", "per service", "broken down by service", "grouped by service",
                             "for each service"]),
    "http.route": Phrases(["by route", "per endpoint", "broken down by route", "for every route"]),
    "region": Phrases(["by region", "per region", "grouped by region", "split by region"]),
    "http.status_code": Phrases(["by status code", "per status", "grouped by status code", "for each status"]),
    "host.name": Phrases(["by host", "per host", "for each machine"]),
    "http.method": Phrases(["by method", "per HTTP method", "split by method"]),
    "db.system": Phrases(["by database", "per database system", "for each database"]),
    "user.id": Phrases(["by user", "per user", "for each user"]),
    "error": Phrases(["by error", "split by error status", "by whether it failed"]),
    "cache.hit": Phrases(["by cache hit", "split by cache hit or miss", "by cache outcome"]),
}
GROUP_NAMES = {  # short nouns for "X and Y" grouping
    "service.name": "service", "http.route": "route", "region": "region", "http.status_code": "status code",
    "host.name": "host", "http.method": "method", "db.system": "database", "user.id": "user",
    "error": "error", "cache.hit": "cache hit",
}
ORDERS = {
    ("DESC", True): Phrases(["showing the top {n}", "top {n} only", "the {n} highest first", "keeping the {n} largest"]),
    ("DESC", False): Phrases(["highest first", "sorted from highest to lowest", "in descending order", "largest first"]),
    ("ASC", True): Phrases(["showing the bottom {n}", "the {n} lowest first", "the {n} smallest"]),
    ("ASC", False): Phrases(["lowest first", "in ascending order", "sorted from lowest to highest", "smallest first"]),
}
SINCE_MINUTES = Phrases(["in the last {n} minutes", "over the past {n} minutes", "for the last {n} min",
                         "within the previous {n} minutes"])
SINCE_HOURS = Phrases(["in the last {n} hours", "over the past {n} hours", "during the last {n} hours",
                       "within the previous {n} hours"])
SINCE_ONE_HOUR = Phrases(["in the last hour", "over the past hour", "during the last hour", "within the previous hour"])
SINCE_DAYS = Phrases(["in the last {n} days", "over the past {n} days", "during the last {n} days",
                      "within the previous {n} days"])
SINCE_NAMED = [("in the last day", "1d"), ("over the past day", "1d"), ("this week", "7d"),
               ("in the last week", "7d"), ("over the past month", "30d")]


def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Gen:
    """Builds one (question, query) pair; `mode` is "train", "new_phrasing" or "new_value"."""

    def __init__(self, rng, mode):
        self.rng, self.mode = rng, mode
        self.used_new_phrase = self.used_new_value = False

    def _from(self, items, held, is_value):
        allow_held = (self.mode == "new_value") if is_value else (self.mode == "new_phrasing")
        n_train = len(items) - held
        if allow_held and held and self.rng.chance(0.45):
            if is_value:
                self.used_new_value = True
            else:
                self.used_new_phrase = True
            return items[n_train + self.rng.below(held)]
        return items[self.rng.below(n_train)]

    def choose_phrase(self, p):
        return self._from(p.items, p.held, False)

    def value(self, p):
        return self._from(p.items, p.held, True)

    # -- slots: each returns (english, query part)

    def calc(self, taken):
        r = self.rng.below(10)
        if r < 4 and "COUNT" not in taken:
            return self.choose_phrase(COUNT_PHRASES), "COUNT"
        if r < 5:
            field = self.rng.pick(sorted(DISTINCT))
            text = "COUNT_DISTINCT(%s)" % field
            if text not in taken:
                return self.choose_phrase(DISTINCT_PHRASES).format(f=self.choose_phrase(DISTINCT[field])), text
        op = self.rng.pick(sorted(AGGREGATES))
        field = self.rng.pick(["duration_ms", "duration_ms", "duration_ms", "db.duration_ms",
                               "response.size_bytes", "retry.count"])
        if op in ("SUM",) and field == "duration_ms" and self.rng.chance(0.5):
            field = "response.size_bytes"
        text = "%s(%s)" % (op, field)
        if text in taken:
            return None
        return self.choose_phrase(AGGREGATES[op]).format(f=self.choose_phrase(NUMERIC[field])), text

    def filter(self, used_fields):
        rng = self.rng
        kinds = ["service", "service", "service_ne", "route", "method", "status_eq", "status_5xx", "status_4xx",
                 "error", "error_false", "slow", "fast", "db_slow", "region", "region", "user", "host",
                 "db_system", "db_statement", "exception", "cache_miss", "cache_hit", "big_response",
                 "retried", "has_db", "has_exception"]
        kind = rng.pick(kinds)
        P = Phrases
        if kind in ("service", "service_ne"):
            f, v = "service.name", self.value(SERVICES)
            if kind == "service":
                ph = P(["for the {v} service", "in {v}", "from {v}", "where the service is {v}", "handled by {v}"])
                return f, self.choose_phrase(ph).format(v=v), "%s = %s" % (f, q(v))
            ph = P(["outside the {v} service", "excluding {v}", "not from {v}", "except for {v}"])
            return f, self.choose_phrase(ph).format(v=v), "%s != %s" % (f, q(v))
        if kind == "route":
            f, v = "http.route", self.value(ROUTES)
            ph = P(["on {v}", "for the route {v}", "to {v}", "hitting {v}"])
            return f, self.choose_phrase(ph).format(v=v), "%s = %s" % (f, q(v))
        if kind == "method":
            f, v = "http.method", rng.pick(METHODS)
            ph = P(["for {v} requests", "with method {v}", "using {v}"])
            return f, self.choose_phrase(ph).format(v=v), "%s = %s" % (f, q(v))
        if kind == "status_eq":
            f, v = "http.status_code", rng.pick(STATUS_CODES)
            ph = P(["with status {v}", "that returned {v}", "with status code {v}", "answered with {v}"])
            return f, self.choose_phrase(ph).format(v=v), "%s = %d" % (f, v)
        if kind == "status_5xx":
            ph = P(["with server errors", "that returned 5xx", "with a status of 500 or more", "with a 5xx status"])
            return "http.status_code", self.choose_phrase(ph), "http.status_code >= 500"
        if kind == "status_4xx":
            ph = P(["with a status of 400 or above", "with client or server errors", "with a 4xx or 5xx status"])
            return "http.status_code", self.choose_phrase(ph), "http.status_code >= 400"
        if kind == "error":
            ph = P(["that failed", "with errors", "that errored", "ending in an error"])
            return "error", self.choose_phrase(ph), "error = true"
        if kind == "error_false":
            ph = P(["that succeeded", "without errors", "with no error"])
            return "error", self.choose_phrase(ph), "error = false"
        if kind in ("slow", "fast"):
            v = rng.pick([50, 100, 200, 250, 300, 500, 750, 1000, 1500, 2000, 3000, 5000])
            if kind == "slow":
                ph = P(["slower than {v} ms", "taking more than {v} ms", "with latency above {v} ms",
                        "that took over {v} milliseconds"])
                return "duration_ms", self.choose_phrase(ph).format(v=v), "duration_ms > %d" % v
            ph = P(["faster than {v} ms", "taking less than {v} ms", "under {v} milliseconds"])
            return "duration_ms", self.choose_phrase(ph).format(v=v), "duration_ms < %d" % v
        if kind == "db_slow":
            v = rng.pick([10, 20, 50, 100, 200, 500])
            ph = P(["with more than {v} ms in the database", "where database time exceeds {v} ms",
                    "spending over {v} ms on queries"])
            return "db.duration_ms", self.choose_phrase(ph).format(v=v), "db.duration_ms > %d" % v
        if kind == "region":
            v = self.value(REGIONS)
            ph = P(["in {v}", "in the {v} region", "from region {v}", "served from {v}"])
            return "region", self.choose_phrase(ph).format(v=v), "region = %s" % q(v)
        if kind == "user":
            v = "u-%d" % (1000 + rng.below(9000))
            ph = P(["for user {v}", "made by {v}", "from user {v}", "belonging to user {v}"])
            return "user.id", self.choose_phrase(ph).format(v=v), "user.id = %s" % q(v)
        if kind == "host":
            v = "%s-%02d" % (rng.pick(["web", "api", "worker", "db"]), 1 + rng.below(24))
            ph = P(["on host {v}", "on {v}", "running on {v}", "from machine {v}"])
            return "host.name", self.choose_phrase(ph).format(v=v), "host.name = %s" % q(v)
        if kind == "db_system":
            v = rng.pick(DB_SYSTEMS)
            ph = P(["that queried {v}", "against {v}", "using the {v} database", "touching {v}"])
            return "db.system", self.choose_phrase(ph).format(v=v), "db.system = %s" % q(v)
        if kind == "db_statement":
            v = self.value(TABLES)
            ph = P(["whose database statement mentions {v}", "with a query containing {v}",
                    "where the statement contains {v}", "with SQL mentioning {v}"])
            return "db.statement", self.choose_phrase(ph).format(v=v), "db.statement CONTAINS %s" % q(v)
        if kind == "exception":
            v = self.value(EXCEPTIONS)
            ph = P(["with exceptions mentioning {v}", "where the exception message contains {v}",
                    "with a {v} exception", "whose error message includes {v}"])
            return "exception.message", self.choose_phrase(ph).format(v=v), "exception.message CONTAINS %s" % q(v)
        if kind == "cache_miss":
            ph = P(["that missed the cache", "with cache misses", "not served from cache"])
            return "cache.hit", self.choose_phrase(ph), "cache.hit = false"
        if kind == "cache_hit":
            ph = P(["served from the cache", "with cache hits", "that hit the cache"])
            return "cache.hit", self.choose_phrase(ph), "cache.hit = true"
        if kind == "big_response":
            v = rng.pick([1000, 10000, 50000, 100000, 1000000])
            ph = P(["with responses larger than {v} bytes", "returning more than {v} bytes",
                    "with a body over {v} bytes"])
            return "response.size_bytes", self.choose_phrase(ph).format(v=v), "response.size_bytes > %d" % v
        if kind == "retried":
            ph = P(["that were retried", "with retries", "with at least one retry"])
            return "retry.count", self.choose_phrase(ph), "retry.count > 0"
        if kind == "has_db":
            ph = P(["that touched a database", "with a database call", "that made a database query"])
            return "db.system", self.choose_phrase(ph), "db.system EXISTS"
        ph = P(["that raised an exception", "with an exception", "that threw an exception"])
        return "exception.message", self.choose_phrase(ph), "exception.message EXISTS"

    def since(self):
        rng = self.rng
        r = rng.below(10)
        if r < 3:
            n = rng.pick([5, 10, 15, 20, 30, 45])
            return self.choose_phrase(SINCE_MINUTES).format(n=n), "%dm" % n
        if r < 4:
            return self.choose_phrase(SINCE_ONE_HOUR), "1h"
        if r < 7:
            n = rng.pick([2, 3, 4, 6, 8, 12])
            return self.choose_phrase(SINCE_HOURS).format(n=n), "%dh" % n
        if r < 9:
            n = rng.pick([2, 3, 5, 7, 14, 30])
            return self.choose_phrase(SINCE_DAYS).format(n=n), "%dd" % n
        return rng.pick(SINCE_NAMED)

    def example(self):
        rng = self.rng
        calcs = []
        n_calcs = 2 if rng.chance(0.1) else 1
        while len(calcs) < n_calcs:
            c = self.calc([t for _, t in calcs])
            if c:
                calcs.append(c)
        filters, used = [], set()
        n_filters = rng.pick([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
        while len(filters) < n_filters:
            field, text, query = self.filter(used)
            if field not in used:
                used.add(field)
                filters.append((text, query))
        groups = []
        n_groups = rng.pick([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
        fields = sorted(GROUPS)
        while len(groups) < n_groups:
            f = rng.pick(fields)
            if f not in groups and f not in used:
                groups.append(f)
            elif len(used) + len(groups) >= len(fields):
                break
        order = None
        if groups and rng.chance(0.4):
            direction = "DESC" if rng.chance(0.7) else "ASC"
            limit = rng.pick([3, 5, 5, 10, 10, 20]) if rng.chance(0.7) else None
            order = (direction, limit)
        since = self.since() if rng.chance(0.6) else None

        # English
        calc_text = " and ".join(t for t, _ in calcs)
        if calc_text.startswith("how many"):
            lead = self.choose_phrase(HOW_MANY_LEADS)
        else:
            lead = self.choose_phrase(LEADS)
        words = [lead + calc_text]
        for t, _ in filters:
            words.append(t)
        if len(groups) == 1:
            words.append(self.choose_phrase(GROUPS[groups[0]]))
        elif len(groups) == 2:
            words.append("by %s and %s" % (GROUP_NAMES[groups[0]], GROUP_NAMES[groups[1]]))
        if since and rng.chance(0.5):
            words.append(since[0])
            since_done = True
        else:
            since_done = False
        sentence = " ".join(w for w in words if w)
        if order:
            direction, limit = order
            sentence += ", " + self.choose_phrase(ORDERS[(direction, limit is not None)]).format(n=limit)
        if since and not since_done:
            sentence += " " + since[0]
        question_like = lead in ("What is ", "Can you show ") or (calc_text.startswith("how many") and lead == "")
        end = "?" if question_like else rng.pick(["", "", "."])
        sentence = sentence[0].upper() + sentence[1:] if not rng.chance(0.15) else sentence[0].lower() + sentence[1:]
        sentence += end

        # query
        query = "FIND " + ", ".join(c for _, c in calcs)
        if filters:
            query += " WHERE " + " AND ".join(f for _, f in filters)
        if groups:
            query += " GROUP BY " + ", ".join(groups)
        if order:
            direction, limit = order
            query += " ORDER BY %s %s" % (calcs[0][1], direction)
            if limit:
                query += " LIMIT %d" % limit
        if since:
            query += " SINCE " + since[1]
        return sentence, query


def chat(question, query):
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                         {"role": "assistant", "content": query}]}


def draw(rng, mode, n, taken, out):
    """Appends n new examples of `mode` to out, skipping questions in taken."""
    while n:
        g = Gen(rng, mode)
        question, query = g.example()
        if mode == "new_phrasing" and not g.used_new_phrase:
            continue
        if mode == "new_value" and not g.used_new_value:
            continue
        if question.lower() in taken:
            continue
        taken.add(question.lower())
        out.append((question, query))
        n -= 1


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)
    rng = Rng(SEED)
    taken = set()
    train, valid, tests = [], [], {}
    draw(rng, "train", N_TRAIN, taken, train)
    draw(rng, "train", N_VALID, taken, valid)
    for kind in ("seen_phrasing", "new_phrasing", "new_value"):
        tests[kind] = []
        draw(rng, "train" if kind == "seen_phrasing" else kind, N_TEST_PER_KIND, taken, tests[kind])
    test = []
    for i in range(N_TEST_PER_KIND):  # interleaved, so any prefix of the suite covers every kind
        for kind in ("seen_phrasing", "new_phrasing", "new_value"):
            test.append((kind,) + tests[kind][i])

    for name, rows in (("train", train), ("valid", valid)):
        with open(os.path.join(out_dir, name + ".jsonl"), "w", encoding="utf-8", newline="\n") as f:
            for question, query in rows:
                f.write(dumps(chat(question, query)) + "\n")
    with open(os.path.join(out_dir, "test.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for _, question, query in test:
            f.write(dumps(chat(question, query)) + "\n")

    # The eval suite (whet-evalspec(5)). The validator path is relative to
    # this directory (whet eval runs exec commands there); QUERY_DSL_VALIDATE
    # overrides it for another build directory.
    validate = "${QUERY_DSL_VALIDATE:-../../build/datasets/query-dsl-validate} --stdout"
    header = {"suite": "query-dsl", "version": 1,
              "description": "English questions to queries of the query DSL (datasets/query-dsl/GRAMMAR.md); "
                             "a case passes when the output is a valid query and the same query as expected",
              "seed": 1234, "temperature": 0, "max_tokens": 64, "stop": ["\n"],
              "gate": {"min_pass_rate": 0.2, "max_drop": 0.05, "alpha": 0.05, "must_pass_tag": "critical"}}
    critical = set()
    for i, (kind, question, query) in enumerate(test):  # the first core cases: one calculation, at most one filter
        simple = "," not in query and " AND " not in query and "GROUP BY" not in query
        if kind == "seen_phrasing" and len(critical) < 5 and simple:
            critical.add(i)
    with open(os.path.join(out_dir, "eval.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        f.write(dumps(header) + "\n")
        for i, (kind, question, query) in enumerate(test):
            case = {"id": "query-dsl-%03d" % (i + 1), "kind": "gen",
                    "tags": [kind] + (["critical"] if i in critical else []),
                    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                    "assert": [{"type": "exec", "value": validate, "weight": 1},
                               {"type": "exec", "value": validate + " --expect", "weight": 2}],
                    "meta": {"expected": query}}
            f.write(dumps(case) + "\n")


if __name__ == "__main__":
    main()
