"""Trait families, one module each: the family and its traits, filed with one call.

    subliminal traits                  # every family found here, in catalogue order

A module of this package calls `subliminal.trait.register_family(Family(...), *traits,
order=N)`; the registry (`subliminal.trait.TRAIT_FAMILIES`) imports every module here on
first lookup, so a new family is a new module (a demonstrations file under subliminal/data
and an audit bank under subliminal/data/audits named after it, when it has a new audit).
`order` places it in listings; without one it comes after the shipped families. This
`__init__` imports none of its modules: they import the registry, never the reverse.
"""
