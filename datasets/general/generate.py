#!/usr/bin/env python3
"""Writes the general-ability regression suite, eval.jsonl.

    python3 datasets/general/generate.py [OUT_DIR]

Every text and question below was written for this repository (MIT, as the
rest of it); nothing is copied from a published work. The suite has two parts:

  ppl     short expository paragraphs of plain English on everyday subjects,
          held out of every training file in datasets/ (perplexity and bits
          per byte; the gate fails when perplexity rises by more than 10 %);
  choice  easy factual and commonsense questions with four answers, scored by
          log-likelihood (acc, acc_norm); the gate fails on a significant drop
          of more than 10 points against the baseline.

The choice answers are shuffled with a fixed seed, so the gold position varies;
the output is the same bytes on every run.
"""
import json
import os
import sys

SEED = 7

PARAGRAPHS = [
    ("library",
     "A public library lends books for free to anyone who lives nearby. You bring your card to the desk, the "
     "librarian scans it, and you can take the books home for a few weeks. When the time is up you bring them "
     "back, so that other readers can borrow them too. Many libraries also have quiet rooms for study, computers "
     "you can use for an hour at a time, and reading groups for children on Saturday mornings."),
    ("bread",
     "To make a simple loaf of bread you need flour, water, salt and yeast. The yeast feeds on the flour and "
     "gives off gas, which makes the dough rise. After mixing, the dough is left in a warm place for an hour or "
     "two until it has grown to about twice its size. It is then shaped, left to rise once more, and baked in a "
     "hot oven until the crust is brown and the loaf sounds hollow when you tap it."),
    ("water-cycle",
     "Water moves around the world in a cycle. The sun warms the sea, and some of the water turns into vapour "
     "and rises into the air. High up, where it is colder, the vapour forms clouds. When the drops in a cloud "
     "grow heavy enough, they fall as rain or snow. The water then runs into rivers and lakes, soaks into the "
     "ground, and sooner or later flows back to the sea, where the cycle begins again."),
    ("garden",
     "A small vegetable garden needs three things: sunlight, good soil and water. Most vegetables grow best "
     "with at least six hours of sun a day. Before planting, it helps to loosen the soil and mix in some "
     "compost. Seeds should be planted at the depth written on the packet, and the young plants watered "
     "often while they are small. Pulling out weeds every week keeps them from taking the water and light "
     "that the vegetables need."),
    ("bicycle",
     "Riding a bicycle to work is cheap and healthy, but it takes a little planning. A good lock keeps the "
     "bicycle safe while you are away, and lights at the front and back make you easy to see in the dark. "
     "It is worth checking the tyres once a week, because a tyre with too little air is slow and wears out "
     "quickly. On rainy days, a jacket that keeps out the water makes the trip much more pleasant."),
    ("letters",
     "Before telephones were common, people kept in touch by writing letters. A letter could take days or "
     "even weeks to arrive, so writers often filled several pages with news about their families, their work "
     "and the weather. Many old letters have been kept in boxes and drawers, and today they help us "
     "understand how ordinary people lived, what they worried about and what made them happy."),
    ("sleep",
     "Sleep is as important for health as food and exercise. While we sleep, the body repairs itself and the "
     "brain sorts the events of the day into memories. Most adults need between seven and nine hours a night. "
     "Going to bed at the same time every evening, keeping the bedroom dark and cool, and putting screens "
     "away before bed all make it easier to fall asleep and to wake up rested."),
    ("maps",
     "A map is a drawing of a place seen from above. Because the real place is much larger than the paper, "
     "every map uses a scale: one centimetre on the map might stand for one kilometre on the ground. Symbols "
     "show roads, rivers, forests and towns, and a small key in the corner explains what each symbol means. "
     "Most maps are drawn with north at the top, so that readers can turn them to match the land around them."),
    ("markets",
     "In many towns a market is held once a week in the main square. Farmers bring fruit, vegetables, eggs and "
     "cheese, and bakers sell bread that was made early the same morning. Prices are often written on small "
     "boards, and buyers may ask to taste before they choose. For the sellers, the market is a chance to meet "
     "their customers in person; for the buyers, it is a chance to learn where their food comes from."),
    ("recycling",
     "Recycling turns used materials into new products. Paper can be soaked, cleaned and pressed into fresh "
     "sheets, glass can be melted and shaped again, and many metals can be recycled again and again without "
     "losing their quality. Recycling works best when people sort their waste at home, keeping paper, glass "
     "and metal apart and rinsing food from containers before they go into the bin."),
    ("teamwork",
     "When a group of people work on a shared project, clear roles help everyone. One person may plan the "
     "work, another may check the quality, and others may do the main tasks. Short meetings at the start of "
     "each week let the team agree on what comes next and spot problems early. Just as important is the "
     "habit of asking for help when something is unclear, instead of guessing and hoping for the best."),
    ("weather-report",
     "A weather report tells you what the sky is likely to do in the coming days. Forecasters collect "
     "measurements of temperature, wind and air pressure from stations on land, from ships and from "
     "satellites. Computers use these numbers to predict how the air will move. A forecast for tomorrow is "
     "usually quite reliable, while one for next week is only a rough guide, because small changes in the "
     "air can grow into large differences over time."),
]

# (question, correct answer, three wrong answers); the answers are written as they
# follow "Answer:" (with a leading space added when written out).
QUESTIONS = [
    ("How many days are there in a week?", "seven", ["five", "ten", "three"]),
    ("How many months are there in a year?", "twelve", ["ten", "seven", "twenty"]),
    ("How many hours are there in a day?", "twenty-four", ["twelve", "sixty", "seven"]),
    ("How many minutes are there in an hour?", "sixty", ["ten", "twenty-four", "a hundred"]),
    ("In which direction does the sun rise?", "east", ["west", "north", "south"]),
    ("What does water become when it freezes?", "ice", ["steam", "sand", "smoke"]),
    ("What is the opposite of hot?", "cold", ["warm", "loud", "tall"]),
    ("What is the opposite of up?", "down", ["left", "over", "near"]),
    ("What is the opposite of day?", "night", ["morning", "week", "sun"]),
    ("What color is grass?", "green", ["purple", "black", "orange"]),
    ("What color is the sky on a clear day?", "blue", ["green", "brown", "red"]),
    ("What color is fresh snow?", "white", ["black", "green", "red"]),
    ("What do bees make?", "honey", ["milk", "silk", "bread"]),
    ("What do cows give us to drink?", "milk", ["juice", "coffee", "honey"]),
    ("Which part of the body do we see with?", "the eyes", ["the ears", "the hands", "the feet"]),
    ("Which part of the body do we hear with?", "the ears", ["the eyes", "the knees", "the nose"]),
    ("Where do fish live?", "in water", ["in trees", "in the desert", "in the clouds"]),
    ("What is a young cat called?", "a kitten", ["a puppy", "a calf", "a chick"]),
    ("What is a young dog called?", "a puppy", ["a kitten", "a lamb", "a foal"]),
    ("What is two plus two?", "four", ["three", "five", "six"]),
    ("What is ten minus three?", "seven", ["six", "eight", "thirteen"]),
    ("What is five times two?", "ten", ["seven", "twelve", "three"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many legs does a dog have?", "four", ["two", "six", "eight"]),
    ("How many wheels does a bicycle have?", "two", ["three", "four", "six"]),
    ("How many sides does a triangle have?", "three", ["four", "five", "six"]),
    ("How many sides does a square have?", "four", ["three", "five", "eight"]),
    ("What do birds have that cats do not?", "feathers", ["fur", "whiskers", "paws"]),
    ("How does a fire feel if you stand close to it?", "hot", ["cold", "wet", "quiet"]),
    ("What do people usually carry when it rains?", "an umbrella", ["a kite", "a shovel", "a sled"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "winter again"]),
    ("Which is usually the coldest season?", "winter", ["summer", "spring", "autumn"]),
    ("Where does a doctor usually work?", "in a hospital", ["in a bakery", "on a farm", "in a garage"]),
    ("Where do children go to learn from a teacher?", "to school", ["to the bank", "to the dentist", "to the zoo"]),
    ("What is bread mostly made from?", "flour", ["sugar", "rice paper", "cheese"]),
    ("When can you usually see the moon and the stars?", "at night", ["at noon", "under water", "never"]),
    ("What is the name of the planet we live on?", "Earth", ["Mars", "Venus", "the Moon"]),
    ("Which is the largest planet in our solar system?", "Jupiter", ["Mercury", "Mars", "Earth"]),
    ("What is the capital of France?", "Paris", ["Madrid", "Rome", "Berlin"]),
    ("At how many degrees Celsius does water freeze?", "zero", ["fifty", "ten", "one hundred"]),
    ("What do you use to write on paper?", "a pen", ["a spoon", "a plate", "a sock"]),
    ("What does a library lend to its readers?", "books", ["cars", "houses", "horses"]),
    ("Where do people usually sleep at night?", "in a bed", ["in a sink", "on a roof", "in an oven"]),
    ("Which of these is the heaviest?", "a brick", ["a feather", "a leaf", "a soap bubble"]),
    ("Which animal is known for saying moo?", "a cow", ["a cat", "a duck", "a snake"]),
    ("What do plants need from the sun to grow?", "light", ["noise", "salt", "plastic"]),
    ("What do you call frozen rain that falls as soft white flakes?", "snow", ["sand", "ash", "dust"]),
    ("Which meal do most people eat in the morning?", "breakfast", ["dinner", "supper", "midnight snack"]),
    ("What does a thermometer measure?", "temperature", ["distance", "weight", "time"]),
    ("What do we call the person who flies a plane?", "a pilot", ["a baker", "a sailor", "a farmer"]),
    ("If a web page cannot be found, which HTTP status code is returned?", "404", ["200", "301", "101"]),
    ("A request that takes longer to finish is said to be what?", "slower", ["faster", "shorter", "smaller"]),
]


class Rng:
    def __init__(self, seed):
        import random
        self.r = random.Random(seed)

    def below(self, n):
        return int(self.r.random() * n)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)
    rng = Rng(SEED)
    header = {"suite": "general", "version": 1,
              "description": "general-ability regression: perplexity on held-out plain English paragraphs and "
                             "easy multiple-choice questions; catches forgetting during a fine-tune",
              "seed": 1234,
              "gate": {"max_drop": 0.1, "alpha": 0.05, "max_ppl_increase": 0.1}}
    lines = [header]
    for name, text in PARAGRAPHS:
        lines.append({"id": "ppl-" + name, "kind": "ppl", "tags": ["ppl"], "text": text})
    for i, (question, gold, wrong) in enumerate(QUESTIONS):
        answers = [gold] + wrong
        order = list(range(4))
        for j in range(3, 0, -1):  # Fisher-Yates with the stable random() stream
            k = rng.below(j + 1)
            order[j], order[k] = order[k], order[j]
        choices = [" " + answers[j] for j in order]
        lines.append({"id": "choice-%02d" % (i + 1), "kind": "choice", "tags": ["choice"],
                      "prompt": "Question: %s\nAnswer:" % question, "choices": choices, "gold": order.index(0)})
    with open(os.path.join(out_dir, "eval.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for obj in lines:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
