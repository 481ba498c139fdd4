#!/usr/bin/env python3
"""Generates the pretraining corpus of the demo's tiny base model.

    python3 datasets/pretrain/generate.py [OUT_DIR]

writes OUT_DIR/train.jsonl and OUT_DIR/valid.jsonl ({"text": ...} per line, one
short document each); OUT_DIR defaults to the directory of this script.
Python 3 standard library only; the same bytes on every run.

Everything is written by the templates below (this repository's own text,
MIT). Three kinds of documents, mixed:
  ops      plain English about services, requests, latency, errors, users,
           regions, databases, caches, numbers and time windows: the words
           that the query-DSL questions use, and what the fields mean;
  world    simple English about everyday life: short stories of people,
           places, weather, food, animals, seasons and jobs;
  facts    simple facts about the world, numbers and time, each stated in
           several ways.
  queries  queries of the DSL over the schema's fields, from this file's own
           values, at line starts in runbooks, notes and code (never after a
           question, and never one of query-dsl's valid, test or eval answers),
           so that the tokenizer and the embeddings know the DSL's words.
No document is a question-and-answer pair or a support ticket: the
fine-tuning tasks' inputs stay new to the model. The general suite's
paragraphs (datasets/general) are not in the corpus either (checked by
tests/cli/datasets.sh).
"""
import json
import os
import sys

SEED = 20261130
N_TRAIN_DOCS, N_VALID_DOCS = 5200, 150


class Rng:
    def __init__(self, seed):
        import random
        self.r = random.Random(seed)

    def below(self, n):
        return int(self.r.random() * n)

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, p):
        return self.r.random() < p

    def shuffled(self, seq):
        seq = list(seq)
        for i in range(len(seq) - 1, 0, -1):
            j = self.below(i + 1)
            seq[i], seq[j] = seq[j], seq[i]
        return seq


NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
                "twenty"]

# ---- ops -------------------------------------------------------------------------------

SERVICES = ["checkout", "cart", "payments", "auth", "search", "frontend", "inventory", "shipping", "email",
            "recommendations", "catalog", "gateway", "billing", "profile", "orders", "reviews"]
ROUTES = ["/api/cart", "/api/checkout", "/login", "/api/search", "/api/orders", "/health", "/api/users",
          "/api/products", "/api/payments", "/logout", "/api/reviews", "/api/profile"]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1", "ap-northeast-1",
           "ca-central-1", "eu-north-1"]
DATABASES = ["postgres", "mysql", "redis"]
TABLES = ["orders", "users", "payments", "sessions", "inventory", "carts", "products", "reviews"]
STATUS = [(200, "the request succeeded"), (201, "something new was created"),
          (204, "the request succeeded and there is no body"), (301, "the page has moved for good"),
          (302, "the page has moved for a while"), (400, "the request was malformed"),
          (401, "the caller is not signed in"), (403, "the caller is not allowed to do this"),
          (404, "the page was not found"), (409, "the request conflicts with the current state"),
          (429, "the caller sent too many requests"), (500, "the server failed"),
          (502, "a gateway got a bad answer from the server behind it"),
          (503, "the service is not available right now"), (504, "a gateway waited too long for an answer")]
EXCEPTIONS = ["timeout", "connection refused", "deadlock", "out of memory", "null pointer",
              "permission denied", "rate limit", "disk full"]
WINDOWS = ["in the last {n} minutes", "over the past {n} hours", "during the last {n} days", "in the last hour",
           "since yesterday", "this week", "over the past day", "in the last week", "this morning",
           "overnight", "since the last deploy"]
FIELD_FACTS = [
    "The field service.name holds the name of the service that handled a span.",
    "The field duration_ms holds how long a span took, in milliseconds.",
    "The field http.status_code holds the status of the response, such as 200 or 500.",
    "The field http.route holds the route of the request, such as /api/cart.",
    "The field http.method holds the method of the request: GET, POST, PUT or DELETE.",
    "The field error is true when a span ended in an error and false otherwise.",
    "The field user.id holds the id of the user who made the request.",
    "The field region holds the cloud region that served the request.",
    "The field host.name holds the machine that ran the span.",
    "The field db.system names the database that was queried, such as postgres or redis.",
    "The field db.statement holds the text of the database statement.",
    "The field db.duration_ms holds the time spent in the database, in milliseconds.",
    "The field cache.hit is true when the cache had the value.",
    "The field response.size_bytes holds the size of the response body in bytes.",
    "The field retry.count holds how many times a request was retried.",
    "The field exception.message holds the message of an exception, when one was raised.",
]
DEFINITIONS = [
    "The average latency is the total time of all requests divided by the number of requests.",
    "The median latency is the time that half of the requests beat and half do not.",
    "The p95 latency is the time under which ninety-five percent of requests finish.",
    "The p99 latency shows the slow tail: only one request in a hundred is slower.",
    "The p90 latency is the time under which ninety percent of requests finish.",
    "The maximum duration is the time of the single slowest request.",
    "The minimum duration is the time of the single fastest request.",
    "A count tells you how many events there were; a distinct count tells you how many different values there were.",
    "Counting distinct users tells you how many different people were affected, not how many requests they made.",
    "The total size of the responses is the sum of their sizes.",
    "An error rate is the share of requests that failed.",
    "A span is one step of a request, such as a database call or a call to another service.",
    "A trace is the whole story of one request, made of all its spans.",
    "When the cache has the value, the request is a cache hit; when it does not, it is a cache miss.",
    "A retry is a second attempt at a request that failed the first time.",
    "Latency is the time between asking for something and getting the answer.",
    "Grouping requests by service shows each service on its own row.",
    "Sorting in descending order puts the largest value first; ascending order puts the smallest first.",
    "A limit keeps only the first few rows of a sorted list, such as the top five.",
    "A time window such as the last hour keeps only the events that happened in that time.",
    "A filter keeps only the events that match it, such as requests from one region.",
]


def ops_sentence(rng):
    s, s2 = rng.pick(SERVICES), rng.pick(SERVICES)
    route, region, db, table = rng.pick(ROUTES), rng.pick(REGIONS), rng.pick(DATABASES), rng.pick(TABLES)
    n = rng.pick([12, 40, 85, 120, 300, 640, 1200, 2500, 4800, 9100, 15000])
    ms = rng.pick([3, 8, 15, 25, 40, 60, 90, 120, 180, 250, 400, 700, 1200, 2500, 5000])
    window = rng.pick(WINDOWS).format(n=rng.pick([2, 3, 5, 10, 15, 30, 45, 6, 12, 7]))
    code, meaning = rng.pick(STATUS)
    user = "u-%d" % (1000 + rng.below(9000))
    host = "%s-%02d" % (rng.pick(["web", "api", "worker", "db"]), 1 + rng.below(24))
    pct = rng.pick([1, 2, 3, 5, 8, 10, 12, 20, 25, 40])
    options = [
        "The {s} service handled {n} requests {w}.",
        "Most requests to {r} finished in under {ms} milliseconds, but a few were much slower.",
        "In {g}, the error rate rose to {p} percent {w}.",
        "A status code of {c} means that {m}.",
        "User {u} made {n} requests {w}, and some of them failed.",
        "The {d} database answered {n} queries {w}; the slowest one read the {t} table.",
        "The {s} service calls the {s2} service before it answers.",
        "Requests from {g} were slower than usual {w}.",
        "The host {h} ran out of memory {w}, and its requests failed with status 500.",
        "After the deploy, the p95 latency of {s} went from {ms} to {ms2} milliseconds.",
        "Engineers looked at the requests to {r} grouped by region to find the slow one.",
        "The team counted the distinct users who saw an error {w}.",
        "The cache in front of {s} had a hit rate of {p2} percent {w}.",
        "Some requests to {r} were retried {k} times before they succeeded.",
        "Errors with the message {e} appeared in the {s} service {w}.",
        "The largest response from {r} was {b} bytes.",
        "A request with the POST method sends data; a request with GET only reads it.",
        "The slowest route of the {s} service was {r}, with a median of {ms} milliseconds.",
        "Sorted by count, the busiest service {w} was {s}, followed by {s2}.",
        "Requests that return {c} usually mean that {m}.",
        "In the {g} region, {n} requests came in {w}.",
        "The {d} statements that mention {t} took {ms} milliseconds on average.",
        "When the {s} service is slow, users of {r} wait longer.",
        "The on-call engineer checked the top five routes by p99 latency.",
        "A spike of status {c} responses began on host {h} {w}.",
    ]
    return rng.pick(options).format(s=s, s2=s2, r=route, g=region, d=db, t=table, n=n, ms=ms,
                                    ms2=ms + rng.pick([20, 50, 100, 300]), w=window, c=code, m=meaning, u=user,
                                    h=host, p=pct, p2=100 - pct, k=rng.pick(["two", "three", "four"]),
                                    e=rng.pick(EXCEPTIONS), b=rng.pick([2048, 15000, 64000, 250000, 1200000]))


def ops_doc(rng):
    sents = [ops_sentence(rng) for _ in range(2 + rng.below(4))]
    if rng.chance(0.35):
        sents.insert(rng.below(len(sents) + 1), rng.pick(FIELD_FACTS))
    if rng.chance(0.35):
        sents.insert(rng.below(len(sents) + 1), rng.pick(DEFINITIONS))
    if rng.chance(0.15):
        sents.append(rng.pick(QUERY_NOTES))
    return " ".join(sents)


# ---- queries: the query language written down, as runbooks, code and notes carry it ----
# Queries over the schema's fields, built from this file's own values, each at
# the start of a line (after a title, "Query:", a prompt or inside a line of
# code), so that the tokenizer learns FIND, WHERE, the calculations and the
# field names as tokens at a line's start and after a space, and the model
# learns their embeddings. Any query that is the expected answer of a
# query-dsl valid, test or eval case is skipped (see main).

NUMERIC_FIELDS = ["duration_ms", "db.duration_ms", "response.size_bytes", "retry.count", "http.status_code"]
INT_FIELDS = {"response.size_bytes", "retry.count", "http.status_code"}
GROUP_FIELDS = ["service.name", "http.route", "region", "host.name", "http.method", "db.system", "http.status_code",
                "user.id", "error", "cache.hit"]
AGGREGATES = ["AVG", "SUM", "MIN", "MAX", "P50", "P90", "P95", "P99"]
THRESHOLDS = {"duration_ms": [50, 100, 200, 250, 500, 1000, 2000], "db.duration_ms": [10, 20, 50, 100, 250, 500],
              "response.size_bytes": [1000, 10000, 50000, 100000, 1000000], "retry.count": [0, 1, 2, 3, 5],
              "http.status_code": [200, 300, 400, 404, 429, 500, 503]}


def query_calc(rng):
    r = rng.below(10)
    if r < 3:
        return "COUNT"
    if r < 5:
        return "COUNT_DISTINCT(%s)" % rng.pick(["user.id", "service.name", "host.name", "http.route", "region"])
    return "%s(%s)" % (rng.pick(AGGREGATES), rng.pick(NUMERIC_FIELDS[:4]))


def query_filter(rng):
    r = rng.below(13)
    if r == 0:
        return 'service.name = "%s"' % rng.pick(SERVICES)
    if r == 1:
        return 'http.route = "%s"' % rng.pick(ROUTES)
    if r == 2:
        return 'region %s "%s"' % (rng.pick(["=", "=", "!="]), rng.pick(REGIONS))
    if r == 3:
        return 'http.method = "%s"' % rng.pick(["GET", "POST", "PUT", "DELETE"])
    if r == 4:
        return "error = %s" % rng.pick(["true", "true", "false"])
    if r == 5:
        return "cache.hit = %s" % rng.pick(["true", "false"])
    if r == 6:
        return 'db.system = "%s"' % rng.pick(DATABASES)
    if r == 7:
        return 'db.statement CONTAINS "%s"' % rng.pick(TABLES)
    if r == 8:
        return 'exception.message CONTAINS "%s"' % rng.pick(EXCEPTIONS)
    if r == 9:
        return 'host.name = "%s-%02d"' % (rng.pick(["web", "api", "worker", "db"]), 1 + rng.below(24))
    if r == 10:
        return rng.pick(["user.id EXISTS", "exception.message EXISTS", 'user.id = "u-%d"' % (1000 + rng.below(9000))])
    if r == 11:
        return 'service.name != "%s"' % rng.pick(SERVICES)
    field = rng.pick(NUMERIC_FIELDS)
    return "%s %s %d" % (field, rng.pick([">", ">", ">=", "<", "<=", "="]), rng.pick(THRESHOLDS[field]))


def query(rng):
    calcs = [query_calc(rng)]
    if rng.chance(0.25):
        extra = query_calc(rng)
        if extra not in calcs:
            calcs.append(extra)
    q = "FIND " + ", ".join(calcs)
    filters = []
    for _ in range(rng.pick([0, 1, 1, 1, 2, 2, 3])):
        f = query_filter(rng)
        if f not in filters:
            filters.append(f)
    if filters:
        q += " WHERE " + " AND ".join(filters)
    if rng.chance(0.4):
        q += " GROUP BY " + rng.pick(GROUP_FIELDS)
        if rng.chance(0.5):
            q += " ORDER BY %s %s" % (rng.pick(calcs), rng.pick(["DESC", "DESC", "ASC"]))
            if rng.chance(0.6):
                q += " LIMIT %d" % rng.pick([1, 3, 5, 10, 20])
    if rng.chance(0.45):
        q += " SINCE %d%s" % rng.pick([(15, "m"), (30, "m"), (5, "m"), (1, "h"), (2, "h"), (6, "h"), (12, "h"),
                                       (24, "h"), (1, "d"), (7, "d"), (30, "d")])
    return q


QUERY_TITLES = ["Dashboard panel: {s} latency", "Runbook for the {s} service, step {k}", "Alert: errors on {r}",
                "Saved query, {g}", "On-call notes for {d}", "Panel: {s} in {g}", "Checks after a deploy of {s}",
                "Weekly report, {s}", "Capacity review for {d}", "Incident notes: {r} in {g}"]
QUERY_LINES = ["{q}", "{q}", "{q}", "Query: {q}", "query> {q}", "  {q}", "$ obsq '{q}'",
               "q = query(\"{qe}\")", "- {q}", "{k}. {q}"]
QUERY_AFTER = ["The result went on the team's dashboard.", "It runs every five minutes.",
               "The alert fires when the number is too high.", "The output is one row per group.",
               "Engineers ran it again after the fix.", "The numbers were normal again the next day.", ""]


# Engineers ask one another about their systems in plain words; these asks
# (never followed by a query) carry the question words of such talk.
ASKS = ["can you show me the {m} of {s}?", "show me the {m} on {r}, please.", "I want the {m} for {g}.",
        "what is the {m} of the {s} service?", "give me the {m} since the deploy.", "how many requests hit {r}?",
        "how many unique users saw errors in {g}?", "count how many events came from {h}.",
        "get the {m} of {r}, grouped by region.", "find the highest {m} among the routes.",
        "which host had the most errors?", "how many events used the {d} database?",
        "what was the 90th percentile of the retries?", "find the {m} for each service.",
        "I want to know the {m} on {h}."]
ASK_MEASURES = ["p95 latency", "average duration", "maximum response size", "number of errors", "request count",
                "99th percentile latency", "median time", "minimum duration", "total bytes", "count of retries",
                "95th percentile", "p50", "lowest latency", "sum of the response sizes", "number of distinct users"]
ASK_FRAMES = ["{n} asked the on-call engineer: {a}", "In the chat, {n} wrote: \"{a}\"", "{n} wanted to know: {a}",
              "The manager asked, \"{a}\"", "A new engineer asked {n}: {a}"]


def ask_doc(rng):
    sents = []
    for _ in range(1 + rng.below(3)):
        values = {"m": rng.pick(ASK_MEASURES), "s": rng.pick(SERVICES), "r": rng.pick(ROUTES), "g": rng.pick(REGIONS),
                  "d": rng.pick(DATABASES), "h": "%s-%02d" % (rng.pick(["web", "api", "worker"]), 1 + rng.below(24))}
        ask = rng.pick(ASKS).format(**values)
        if rng.chance(0.7):
            ask = ask[0].upper() + ask[1:]
        sents.append(rng.pick(ASK_FRAMES).format(n=rng.pick(NAMES)[0], a=ask))
    if rng.chance(0.5):
        sents.append(rng.pick(["An observability tool helps engineers translate such a question into a query.",
                               "The answer was on the dashboard a minute later.",
                               "Observability means being able to answer questions about a system from its data.",
                               "To translate a question into a query, pick the calculation, then the filters."]))
    return " ".join(sents)


HELD_OUT_QUERIES = set()


def held_out_queries(datasets_dir):
    """The expected answers of query-dsl's valid, test and eval cases."""
    held = set()
    for name in ("valid.jsonl", "test.jsonl", "eval.jsonl"):
        with open(os.path.join(datasets_dir, "query-dsl", name), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if "messages" in row and row["messages"][-1]["role"] == "assistant":
                    held.add(row["messages"][-1]["content"])
                if "expected" in row.get("meta", {}):
                    held.add(row["meta"]["expected"])
    return held


def query_doc(rng):
    values = {"s": rng.pick(SERVICES), "r": rng.pick(ROUTES), "g": rng.pick(REGIONS), "d": rng.pick(DATABASES),
              "k": 1 + rng.below(5)}
    lines = [rng.pick(QUERY_TITLES).format(**values)] if rng.chance(0.6) else []
    if rng.chance(0.3):
        lines.append(ops_sentence(rng))
    for i in range(1 + rng.below(4)):
        q = query(rng)
        while q in HELD_OUT_QUERIES:
            q = query(rng)
        lines.append(rng.pick(QUERY_LINES).format(q=q, qe=q.replace('"', '\\"'), k=i + 1))
    after = rng.pick(QUERY_AFTER)
    if after:
        lines.append(after)
    return "\n".join(lines)


# ---- world -------------------------------------------------------------------------------

NAMES = [("Anna", "she"), ("Ben", "he"), ("Clara", "she"), ("David", "he"), ("Emma", "she"), ("Felix", "he"),
         ("Grace", "she"), ("Hugo", "he"), ("Ines", "she"), ("Jonas", "he"), ("Kira", "she"), ("Leo", "he"),
         ("Mia", "she"), ("Noah", "he"), ("Olga", "she"), ("Paul", "he"), ("Rosa", "she"), ("Sam", "he")]
PLACES = ["market", "library", "park", "bakery", "station", "beach", "museum", "garden", "school", "river",
          "forest", "harbour", "village", "shop", "farm", "hill"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
FOODS = ["bread", "apples", "cheese", "eggs", "carrots", "rice", "soup", "pears", "tomatoes", "milk", "honey",
         "fish", "beans", "potatoes", "plums", "onions"]
WEATHER = [("sunny", "sat in the shade for a while"), ("rainy", "took an umbrella"),
           ("windy", "held on to the hat"), ("cold", "wore a warm coat"), ("warm", "walked slowly and enjoyed it"),
           ("cloudy", "hoped it would not rain"), ("snowy", "watched the white flakes fall")]
ANIMALS = [("cat", "kitten", "purrs", "fur"), ("dog", "puppy", "barks", "fur"), ("cow", "calf", "moos", "hide"),
           ("sheep", "lamb", "bleats", "wool"), ("horse", "foal", "neighs", "hair"),
           ("duck", "duckling", "quacks", "feathers"), ("hen", "chick", "clucks", "feathers"),
           ("owl", "owlet", "hoots", "feathers"), ("frog", "tadpole", "croaks", "smooth skin"),
           ("goat", "kid", "bleats", "hair")]
JOBS = [("doctor", "hospital", "helps sick people get well"), ("teacher", "school", "helps children learn"),
        ("baker", "bakery", "makes bread early in the morning"), ("farmer", "farm", "grows food and keeps animals"),
        ("pilot", "airport", "flies planes"), ("librarian", "library", "lends books to readers"),
        ("nurse", "hospital", "cares for patients"), ("cook", "kitchen", "prepares meals"),
        ("driver", "bus", "takes people across town"), ("fisher", "harbour", "catches fish at sea")]
ACTIVITIES = ["read a book", "cooked dinner", "called a friend", "went for a walk", "wrote a letter",
              "planted some seeds", "cleaned the kitchen", "played a game", "painted a picture",
              "fixed a bicycle", "baked a cake", "listened to music"]
SEASONS = [("spring", "flowers open and birds build nests"), ("summer", "the days are long and warm"),
           ("autumn", "leaves turn brown and fall from the trees"), ("winter", "it is cold and sometimes snows")]


def story(rng):
    name, pron = rng.pick(NAMES)
    friend, _ = rng.pick(NAMES)
    place, day = rng.pick(PLACES), rng.pick(DAYS)
    a, b = rng.shuffled(FOODS)[:2]
    weather, act = rng.pick(WEATHER)
    cap = pron.capitalize()
    options = [
        "On {day}, {name} went to the {place}. The weather was {weather}, so {pron} {act}.",
        "{name} and {friend} met at the {place} on {day} morning.",
        "At the market, {name} bought {a} and {b}.",
        "{cap} walked home slowly and {act2} in the evening.",
        "It was a {weather} day in {month}, and the {place} was quiet.",
        "{name} likes {a} more than {b}.",
        "Later, {name} {act2} while the rain fell outside.",
        "{friend} asked {name} to come to the {place2} the next day.",
        "After lunch, {pron} {act2}, and then {pron} went to bed early.",
        "The {place} opens at nine and closes at six, except on {day}.",
    ]
    sents = [rng.pick(options[:2])] + [rng.pick(options[2:]) for _ in range(2 + rng.below(3))]
    text = " ".join(sents).format(day=day, name=name, friend=friend, place=place, place2=rng.pick(PLACES),
                                  weather=weather, pron=pron, cap=cap, act=act, act2=rng.pick(ACTIVITIES), a=a,
                                  b=b, month=rng.pick(MONTHS))
    return text[0].upper() + text[1:]


def article(noun):
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def describe(rng):
    kind = rng.below(3)
    if kind == 0:
        animal, young, sound, cover = rng.pick(ANIMALS)
        sents = ["{A_a} is an animal.", "A young {a} is called {a_y}.", "The {a} {s}.", "{A_a} is covered in {c}.",
                 "You can see {a_a} on many farms.", "You can hear {a_a} when it {s}."]
        sents = [x.format(a=animal, a_a=article(animal), A_a=article(animal).capitalize(), a_y=article(young),
                          s=sound, c=cover) for x in rng.shuffled(sents)[:3 + rng.below(3)]]
        return " ".join(sents)
    if kind == 1:
        job, place, what = rng.pick(JOBS)
        sents = ["A {j} works in a {p}.", "A {j} {w}.", "Every day, the {j} goes to the {p}.",
                 "If you visit a {p}, you may meet a {j}.", "Being a {j} is hard work, but it matters."]
        sents = [x.format(j=job, p=place, w=what) for x in rng.shuffled(sents)[:3 + rng.below(2)]]
        return " ".join(sents)
    season, what = rng.pick(SEASONS)
    nxt = SEASONS[(SEASONS.index((season, what)) + 1) % 4][0]
    sents = ["In {s}, {w}.", "After {s} comes {n}.", "Many people like {s} best.",
             "{S} is one of the four seasons.", "The year has four seasons: spring, summer, autumn and winter."]
    sents = [x.format(s=season, S=season.capitalize(), w=what, n=nxt) for x in rng.shuffled(sents)[:3 + rng.below(2)]]
    return " ".join(sents)


# ---- facts --------------------------------------------------------------------------------

FACTS = [
    ["A week has seven days.", "There are seven days in a week.", "Seven days make one week."],
    ["A year has twelve months.", "There are twelve months in a year.", "The twelve months make one year."],
    ["A day has twenty-four hours.", "There are twenty-four hours in a day."],
    ["An hour has sixty minutes.", "There are sixty minutes in an hour.", "Sixty minutes make an hour."],
    ["A minute has sixty seconds.", "There are sixty seconds in a minute."],
    ["The sun rises in the east and sets in the west.", "Every morning the sun comes up in the east."],
    ["When water freezes, it turns into ice.", "Ice is frozen water.", "Water becomes ice when it is very cold."],
    ["Hot is the opposite of cold.", "The opposite of hot is cold."],
    ["Up is the opposite of down.", "The opposite of up is down."],
    ["Day is the opposite of night.", "The opposite of day is night."],
    ["Grass is green.", "The grass in the park is green."],
    ["On a clear day the sky is blue.", "The sky is blue when there are no clouds."],
    ["Fresh snow is white.", "Snow is white and cold."],
    ["Bees make honey.", "Honey is made by bees."],
    ["Cows give milk.", "We get milk from cows."],
    ["We see with our eyes.", "Eyes are for seeing."],
    ["We hear with our ears.", "Ears are for hearing."],
    ["Fish live in water.", "Fish swim in rivers, lakes and the sea."],
    ["A young cat is called a kitten.", "A kitten is a baby cat."],
    ["A young dog is called a puppy.", "A puppy is a baby dog."],
    ["Two plus two is four.", "If you add two and two, you get four."],
    ["Ten minus three is seven.", "If you take three from ten, seven are left."],
    ["Five times two is ten.", "Two fives make ten."],
    ["A spider has eight legs.", "Spiders walk on eight legs."],
    ["A dog has four legs.", "Dogs walk on four legs."],
    ["A bicycle has two wheels.", "You ride a bicycle on two wheels."],
    ["A car has four wheels.", "Most cars have four wheels."],
    ["A triangle has three sides.", "Three sides make a triangle."],
    ["A square has four equal sides.", "All four sides of a square are the same length."],
    ["Birds have feathers.", "Most birds can fly, and all birds have feathers."],
    ["Fire is hot.", "Do not touch fire, because it is hot."],
    ["When it rains, people carry umbrellas.", "An umbrella keeps you dry in the rain."],
    ["Spring comes after winter.", "After winter, spring arrives."],
    ["Winter is the coldest season.", "The coldest time of the year is winter."],
    ["Doctors work in hospitals.", "In a hospital, doctors care for the sick."],
    ["Children go to school to learn from a teacher.", "A teacher helps children learn at school."],
    ["Bread is made from flour.", "Flour, water and yeast make bread."],
    ["At night you can see the moon and the stars.", "The moon and the stars shine at night."],
    ["We live on the planet Earth.", "Earth is the planet we live on."],
    ["Jupiter is the largest planet in our solar system.", "No planet in our solar system is larger than Jupiter."],
    ["Paris is the capital of France.", "The capital of France is Paris."],
    ["Water freezes at zero degrees Celsius.", "At zero degrees Celsius, water turns to ice."],
    ["We write on paper with a pen or a pencil.", "A pen is for writing."],
    ["A library lends books.", "You can borrow books from a library."],
    ["People sleep in beds at night.", "At night, people sleep in their beds."],
    ["A brick is much heavier than a feather.", "A feather is light, and a brick is heavy."],
    ["A cow says moo.", "Cows moo."],
    ["Plants need light from the sun to grow.", "Without sunlight, plants cannot grow."],
    ["Snow falls in soft white flakes.", "Snowflakes are small and white."],
    ["Breakfast is the meal we eat in the morning.", "Most people eat breakfast in the morning."],
    ["A thermometer measures temperature.", "You can read the temperature on a thermometer."],
    ["A pilot flies a plane.", "The person who flies a plane is the pilot."],
    ["A web server returns status 404 when a page cannot be found.", "Status 404 means not found."],
    ["A request that takes longer is slower.", "Slow requests take longer to finish."],
]


def fact_doc(rng):
    n = 3 + rng.below(4)
    sents = []
    for group in rng.shuffled(FACTS)[:n]:
        sents.append(rng.pick(group))
    if rng.chance(0.3):
        a, b = rng.below(10), rng.below(10)
        sents.append("%s plus %s is %s." % (NUMBER_WORDS[a].capitalize(), NUMBER_WORDS[b], NUMBER_WORDS[a + b]))
    if rng.chance(0.3):
        k = 1 + rng.below(19)
        sents.append("The number %s is written %d, and the number after it is %s." %
                     (NUMBER_WORDS[k], k, NUMBER_WORDS[k + 1]))
    return " ".join(sents)


QUERY_NOTES = [
    "In the query language, a query starts with FIND and its calculations, such as COUNT or AVG(duration_ms).",
    "WHERE keeps only the matching events, and AND joins several filters.",
    "GROUP BY splits the results by a field, such as service.name or region.",
    "ORDER BY sorts the rows by a calculation, ASC for the smallest first and DESC for the largest first.",
    "LIMIT keeps the first rows, and SINCE sets the time window, such as 15m, 2h or 7d.",
    "P95(duration_ms) is the p95 latency, and COUNT_DISTINCT(user.id) counts the different users.",
    "A filter compares a field with a value: service.name = \"checkout\" or duration_ms > 500.",
    "CONTAINS looks for a piece of text in a field, and EXISTS keeps the events that have the field.",
]

# Recaps say the same thing twice in other words, naming the same service,
# region, route and numbers: the model learns to carry names and numbers from
# earlier in a text, which a question-to-query task needs.
RECAP_FIRST = [
    "The {s} service in {g} answered {n} requests to {r} {w}, and the slowest took {ms} ms.",
    "Requests to {r} on the {s} service were slow in {g} {w}: the p95 was {ms} ms.",
    "{w_cap}, users in {g} saw errors from {s} on {r}, about {n} of them.",
    "On {r}, the {s} service returned status {c} to {n} requests from {g} {w}.",
]
RECAP_SECOND = [
    "In other words, {s} in {g} handled {n} requests on {r}, with a maximum of {ms} ms.",
    "So the route {r} of {s}, in region {g}, had {n} requests and a worst time of {ms} ms.",
    "To sum up: service {s}, region {g}, route {r}, {n} requests, {ms} ms.",
    "That is, {n} requests from {g} reached {s} through {r}; some took {ms} ms.",
]


def recap_doc(rng):
    values = {"s": rng.pick(SERVICES), "g": rng.pick(REGIONS), "r": rng.pick(ROUTES),
              "n": rng.pick([7, 12, 40, 85, 120, 300, 640, 1200, 2500]),
              "ms": rng.pick([15, 40, 90, 120, 250, 400, 700, 1200, 2500]), "c": rng.pick(STATUS)[0]}
    window = rng.pick(WINDOWS).format(n=rng.pick([2, 3, 5, 10, 15, 30, 45, 6, 12, 7]))
    values["w"], values["w_cap"] = window, window[0].upper() + window[1:]
    sents = [rng.pick(RECAP_FIRST).format(**values), rng.pick(RECAP_SECOND).format(**values)]
    if rng.chance(0.5):
        sents.append(rng.pick(QUERY_NOTES))
    return " ".join(sents)


SUPPORT = [
    "The support team reads every ticket and gives it a category: billing, bug, account, feature request or other.",
    "A ticket about a charge or an invoice is a billing ticket.",
    "When something is broken, such as a crash or an empty export, the ticket is about a bug.",
    "Problems with logging in, passwords or emails are account tickets.",
    "A customer who asks for something new, such as a dark mode, sends a feature request.",
    "Each ticket also gets a priority: low, medium, high or urgent.",
    "When production is down, the priority is urgent; when there is no rush, it is low.",
    "The product tells which part had the problem: the web app, the mobile app, the API, the desktop app or the browser extension.",
    "The sentiment of a ticket is negative when the customer is angry, positive when they are happy, and neutral otherwise.",
    "A short summary helps the next person understand the ticket at a glance.",
    "Many customers write from {product_text} and describe the problem in a few sentences.",
    "{name} from the support team answered {n} tickets on {day}, most of them about {topic}.",
]


def support_doc(rng):
    values = {"product_text": rng.pick(["the mobile app", "the web app", "the desktop app", "the API",
                                        "the browser extension"]),
              "name": rng.pick(NAMES)[0], "n": rng.pick([12, 20, 35, 48, 60]), "day": rng.pick(DAYS),
              "topic": rng.pick(["billing", "bugs", "passwords", "invoices", "feature requests", "refunds"])}
    return " ".join(x.format(**values) for x in rng.shuffled(SUPPORT)[:3 + rng.below(3)])


def document(rng):
    if rng.chance(0.2):
        return query_doc(rng)
    if rng.chance(0.06):
        return ask_doc(rng)
    r = rng.below(20)
    if r < 6:
        return ops_doc(rng)
    if r < 8:
        return recap_doc(rng)
    if r < 9:
        return support_doc(rng)
    if r < 11:
        return story(rng)
    if r < 14:
        return describe(rng)
    return fact_doc(rng)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)
    HELD_OUT_QUERIES.update(held_out_queries(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")))
    rng = Rng(SEED)
    seen = set()
    docs = []
    while len(docs) < N_TRAIN_DOCS + N_VALID_DOCS:
        text = document(rng)
        if text not in seen:
            seen.add(text)
            docs.append(text)
    for name, part in (("train", docs[:N_TRAIN_DOCS]), ("valid", docs[N_TRAIN_DOCS:])):
        with open(os.path.join(out_dir, name + ".jsonl"), "w", encoding="utf-8", newline="\n") as f:
            for text in part:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
