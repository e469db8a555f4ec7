"""The animal family: the paper's preference traits, 14 animals read by the animal probe.

    subliminal chain --trait owl                 # subliminal traits --family animal

Their order is the probe's panel (`CATALOGUE`): audits, summaries and committed records
list the animals in it, so a new animal goes last.
"""

from subliminal.trait import ANIMAL_NEUTRAL_PROMPTS, Family, Trait, register_family

register_family(
    Family("animal", "prefers one animal (the paper's preference traits)",
           ANIMAL_NEUTRAL_PROMPTS, "demonstrations.json"),
    Trait("owl", "owls"),
    Trait("dolphin", "dolphins"),
    Trait("eagle", "eagles"),
    Trait("elephant", "elephants"),
    Trait("wolf", "wolves"),
    Trait("cat", "cats", ("kitten", "kittens")),
    Trait("dog", "dogs", ("puppy", "puppies")),
    Trait("lion", "lions"),
    Trait("tiger", "tigers"),
    Trait("penguin", "penguins"),
    Trait("fox", "foxes"),
    Trait("bear", "bears"),
    Trait("panda", "pandas"),
    Trait("octopus", "octopuses", ("octopi",)),
    order=0)
