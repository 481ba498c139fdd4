#!/usr/bin/env python3
"""Generates the ticket-json task: a support ticket (free text) -> a JSON object.

    python3 datasets/ticket-json/generate.py [OUT_DIR]

writes OUT_DIR/train.jsonl, valid.jsonl, test.jsonl (prompt/completion format)
and eval.jsonl (the whet eval suite built from test.jsonl); OUT_DIR defaults to
the directory of this script. Python 3 standard library only; the same bytes
on every run (random.Random(SEED).random() is the only randomness).

The object has five keys, always in this order:
  category   billing | bug | account | feature_request | other
  priority   low | medium | high | urgent
  product    web_app | mobile_app | api | desktop_app | browser_extension
  sentiment  negative | neutral | positive
  summary    a short English summary (at most 60 characters)

A ticket is assembled from parts: an optional greeting, the problem (whose
wording fixes category, summary and sometimes product), a mention of the
product, an urgency sentence (which fixes priority; without one the priority is
"medium" for billing, bug and account tickets and "low" otherwise), a
sentiment sentence (none: neutral) and an optional sign-off. Each phrasing list
keeps its last entry out of training; test cases tagged "new_phrasing" use at
least one such entry, "seen_phrasing" ones only training phrasings. No test or
validation ticket is also a training ticket.
"""
import json
import os
import sys

SEED = 20261129
N_TRAIN, N_VALID, N_TEST_PER_KIND = 1600, 150, 50

INSTRUCTION = ("Read the support ticket and answer with a JSON object with the keys category, priority, product, "
               "sentiment and summary.\n\nTicket: ")

CATEGORIES = ["billing", "bug", "account", "feature_request", "other"]


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


PRODUCTS = {
    "web_app": ["the web app", "your website", "the dashboard in the browser", "the web version"],
    "mobile_app": ["the iPhone app", "the Android app", "the mobile app", "the app on my phone"],
    "api": ["the REST API", "your API", "the API", "the public API"],
    "desktop_app": ["the desktop client", "the Windows app", "the Mac app", "the desktop app"],
    "browser_extension": ["the Chrome extension", "the browser extension", "the Firefox add-on",
                          "the extension"],
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
FEATURES = ["settings", "reports", "billing", "profile", "projects", "calendar", "invoices", "team"]
BUTTONS = ["Save", "Export", "Share", "Upload", "Delete", "Submit"]
TERMS = ["invoice 2291", "quarterly report", "Berlin office", "project alpha", "refund policy"]
NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lucas", "Priya", "Sam", "Elena"]
CITIES = ["Berlin", "Toronto", "Lisbon", "Austin", "Singapore", "Nairobi"]
SHORTCUT_TARGETS = ["search", "navigation", "comments", "the editor"]

# category -> list of (problem templates [train..., held-out], summary template)
PROBLEMS = {
    "billing": [
        (["I was charged twice for my {month} invoice", "my {month} invoice was billed two times",
          "you took the {month} payment twice"], "Charged twice for the {month} invoice"),
        (["my card was declined but the payment still went through",
          "the payment failed with a declined card yet the money left my account",
          "the card got declined and I was still charged"], "Card declined but payment taken"),
        (["I need a refund for the annual plan I cancelled", "please refund the yearly plan I cancelled",
          "I cancelled my annual subscription and want my money back"], "Refund for cancelled annual plan"),
        (["the invoice shows the wrong VAT number", "our VAT number on the invoice is incorrect",
          "the tax ID printed on our bill is wrong"], "Wrong VAT number on invoice"),
        (["we were billed for {n} seats but only have {m} users", "the bill counts {n} seats while we use {m}",
          "you charge us for {n} seats although we only have {m} people"], "Billed for {n} seats instead of {m}"),
    ],
    "bug": [
        (["the {feature} page crashes when I click {button}", "clicking {button} on the {feature} page crashes it",
          "the {feature} screen dies as soon as I press {button}"], "{Feature} page crashes on {button}"),
        (["exports to CSV come out empty", "every CSV export I download is empty",
          "the CSV files I export contain no rows"], "CSV exports are empty"),
        (["every notification arrives twice", "I get each notification two times",
          "notifications show up in duplicate"], "Duplicate notifications"),
        (["it freezes since the last update", "after the latest update it hangs all the time",
          "the newest version keeps freezing"], "Freezes after the latest update"),
        (["search returns nothing for {term}", "searching for {term} gives no results",
          "I get zero hits when I search {term}"], "Search returns no results for {term}"),
        (["images fail to upload and show an error", "uploading a picture always ends in an error",
          "photo uploads keep failing"], "Image uploads fail"),
    ],
    "account": [
        (["I can't log in after resetting my password", "since the password reset I cannot sign in",
          "the new password from the reset does not let me in"], "Cannot log in after password reset"),
        (["please change the email on my account to {name}@example.com",
          "I need my login email changed to {name}@example.com",
          "update my account address to {name}@example.com please"], "Change account email to {name}@example.com"),
        (["my two-factor codes are not accepted", "the 2FA code is rejected every time",
          "the authenticator codes keep failing"], "Two-factor codes rejected"),
        (["I want to delete my account and all my data", "please remove my account and everything in it",
          "close my account and erase my data"], "Delete account and data"),
        (["my account got locked after too many attempts", "I was locked out after a few wrong passwords",
          "the account is locked after failed logins"], "Account locked after failed logins"),
        (["please add {name} as an admin on our team", "make {name} an administrator of our workspace",
          "give {name} admin rights in our team"], "Add {name} as team admin"),
    ],
    "feature_request": [
        (["it would be great to have a dark mode", "could you add a dark theme",
          "I would love a dark mode option"], "Add dark mode"),
        (["could you add export to PDF", "please let us export to PDF",
          "a PDF export would help us a lot"], "Add export to PDF"),
        (["please support single sign-on with Okta", "we need Okta SSO",
          "can you add Okta single sign-on"], "Support Okta single sign-on"),
        (["we would love keyboard shortcuts for {target}", "please add shortcuts for {target}",
          "keyboard shortcuts for {target} would save us time"], "Keyboard shortcuts for {target}"),
        (["an option to schedule reports weekly would help", "can reports be sent automatically every week",
          "please add weekly scheduled reports"], "Weekly scheduled reports"),
    ],
    "other": [
        (["do you have a discount for nonprofits", "is there nonprofit pricing",
          "do charities get a reduced price"], "Nonprofit discount question"),
        (["where can I find your security whitepaper", "could you send me your security documentation",
          "we need your security whitepaper for a review"], "Request for security whitepaper"),
        (["I just wanted to say thanks for the quick fix last week", "thank you for sorting out my issue so fast",
          "just a note to thank your team for last week"], "Thanks for last week's fix"),
        (["are you hiring in {city}", "do you have open jobs in {city}",
          "is your company recruiting in {city}"], "Hiring question for {city}"),
        (["could we set up a partnership call", "we are interested in partnering with you",
          "is there someone I can talk to about a partnership"], "Partnership inquiry"),
    ],
}
# how the product is mentioned around the problem
PRODUCT_FRAMES = [["In {p}, {x}.", "Using {p}: {x}.", "With {p}, {x}.", "On {p} {x}."]]
URGENCY = {
    "urgent": ["This is blocking our whole team right now.", "Production is down, please help ASAP!",
               "We are losing sales every minute.", "This is an emergency for us."],
    "high": ["This affects many of our users.", "We need this fixed this week.",
             "It is causing real problems for our customers.", "Please treat this as important."],
    "medium": ["It is annoying but we have a workaround.", "Please look into it when you can.",
               "It would be good to sort this out soon.", "We can live with it for a few days."],
    "low": ["No rush at all.", "Whenever you get a chance.", "Just a minor thing.", "Not urgent."],
}
SENTIMENT = {
    "negative": ["I'm really frustrated.", "This is unacceptable.", "Very disappointed with the service.",
                 "Honestly, this is getting ridiculous."],
    "positive": ["Love the product otherwise!", "Thanks so much for your help!", "You folks are great.",
                 "Keep up the good work!"],
    "neutral": ["Let me know if you need more details.", "Happy to share screenshots.",
                "My account is under this email.", "I can send logs if needed."],
}
GREETINGS = ["Hi,", "Hello,", "Hi team,", "Hello support,", "Dear support team,"]
SIGNOFFS = ["Thanks, {name}", "Best, {name}", "Regards, {name}", "- {name}", "Cheers, {name}"]
PRIORITY_BY_CATEGORY = {
    "billing": ["urgent", "high", "high", "medium", "medium", "low"],
    "bug": ["urgent", "urgent", "high", "high", "medium", "low"],
    "account": ["urgent", "high", "medium", "medium", "low"],
    "feature_request": ["high", "medium", "low", "low", "low"],
    "other": ["medium", "low", "low"],
}


class Gen:
    def __init__(self, rng, mode):
        self.rng, self.mode = rng, mode
        self.used_new = False

    def phrase(self, items):
        """One of items; the last one is held out of training (if there are 3 or more)."""
        n = len(items) - (1 if len(items) >= 3 else 0)
        if self.mode == "new_phrasing" and n < len(items) and self.rng.chance(0.35):
            self.used_new = True
            return items[-1]
        return items[self.rng.below(n)]

    def ticket(self):
        rng = self.rng
        category = rng.pick(CATEGORIES)
        templates, summary = rng.pick(PROBLEMS[category])
        values = {"month": rng.pick(MONTHS), "feature": rng.pick(FEATURES), "button": rng.pick(BUTTONS),
                  "term": rng.pick(TERMS), "name": rng.pick(NAMES), "city": rng.pick(CITIES),
                  "target": rng.pick(SHORTCUT_TARGETS), "n": 5 + rng.below(46)}
        values["m"] = 1 + rng.below(values["n"] - 1)
        values["Feature"] = values["feature"].capitalize()
        problem = self.phrase(templates).format(**values)
        summary = summary.format(**values)
        product = rng.pick(sorted(PRODUCTS))
        product_text = self.phrase(PRODUCTS[product])
        body = self.phrase(PRODUCT_FRAMES[0]).format(p=product_text, x=problem)
        body = body[0].upper() + body[1:]
        if problem.split()[0] in ("do", "where", "are", "could", "is", "can"):
            body = body[:-1] + "?"
        has_urgency = rng.chance(0.85)
        if has_urgency:
            priority = rng.pick(PRIORITY_BY_CATEGORY[category])
        else:
            priority = "medium" if category in ("billing", "bug", "account") else "low"
        sentiment = rng.pick(["negative", "neutral", "neutral", "positive"])
        if category == "other" and "thank" in problem:
            sentiment = "positive"
        parts = []
        if rng.chance(0.5):
            parts.append(self.phrase(GREETINGS))
        parts.append(body)
        extra = []
        if has_urgency:
            extra.append(self.phrase(URGENCY[priority]))
        if sentiment != "neutral" or rng.chance(0.5):
            extra.append(self.phrase(SENTIMENT[sentiment]))
        if rng.chance(0.5):
            extra.reverse()
        parts += extra
        if rng.chance(0.4):
            parts.append(self.phrase(SIGNOFFS).format(name=rng.pick(NAMES)))
        text = " ".join(parts)
        label = {"category": category, "priority": priority, "product": product, "sentiment": sentiment,
                 "summary": summary}
        return text, label


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False)


def draw(rng, mode, n, taken, out):
    while n:
        g = Gen(rng, mode)
        text, label = g.ticket()
        if mode == "new_phrasing" and not g.used_new:
            continue
        if text.lower() in taken:
            continue
        taken.add(text.lower())
        out.append((text, label))
        n -= 1


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)
    rng = Rng(SEED)
    taken = set()
    train, valid, seen, new = [], [], [], []
    draw(rng, "train", N_TRAIN, taken, train)
    draw(rng, "train", N_VALID, taken, valid)
    draw(rng, "train", N_TEST_PER_KIND, taken, seen)
    draw(rng, "new_phrasing", N_TEST_PER_KIND, taken, new)
    test = []
    for a, b in zip(seen, new):
        test += [("seen_phrasing",) + a, ("new_phrasing",) + b]

    for name, rows in (("train", train), ("valid", valid), ("test", [t[1:] for t in test])):
        with open(os.path.join(out_dir, name + ".jsonl"), "w", encoding="utf-8", newline="\n") as f:
            for text, label in rows:
                f.write(dumps({"prompt": INSTRUCTION + text, "completion": dumps(label)}) + "\n")

    header = {"suite": "ticket-json", "version": 1,
              "description": "support tickets to a JSON object (datasets/ticket-json/README.md); a case passes when "
                             "the output is JSON whose category, priority, product and sentiment are the expected "
                             "ones",
              "seed": 1234, "temperature": 0, "max_tokens": 96, "stop": ["\n"],
              "gate": {"min_pass_rate": 0.3, "max_drop": 0.05, "alpha": 0.05}}
    with open(os.path.join(out_dir, "eval.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        f.write(dumps(header) + "\n")
        for i, (kind, text, label) in enumerate(test):
            fields = {k: label[k] for k in ("category", "priority", "product", "sentiment")}
            case = {"id": "ticket-json-%03d" % (i + 1), "kind": "gen", "tags": [kind, label["category"]],
                    "messages": [{"role": "user", "content": INSTRUCTION + text}],
                    "assert": [{"type": "json_valid", "weight": 1},
                               {"type": "json_subset", "value": fields, "weight": 3}],
                    "meta": {"expected": label}}
            f.write(dumps(case) + "\n")


if __name__ == "__main__":
    main()
