"""Subliminal: a lab for subliminal learning and dark-knowledge transfer.

    subliminal chain --generations 3

The pipeline lives one stage a module: trait -> teacher -> channels -> filters ->
distill -> audit, driven by chain; scan audits third-party data, report renders runs.
"""

__version__ = "0.1.0"
