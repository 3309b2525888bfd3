"""Phenotype coverage: do a synthetic population's cells have the phenotypes of real recorded
cells? ``cardiotwin coverage STORE --real FILES_OR_DIR``.

Modules: ``phenotypes`` (the compared phenotypes of real AP recordings and of a population
store), ``match`` (the matching criterion, vectorised nearest synthetic cell), ``report`` (the
report: per real cell, totals, percentiles; coverage.json), ``figures`` (coverage.png),
``cli_args`` (the command). matplotlib and pyarrow are imported only where used.
"""

from .match import MATCH_KEYS, MatchCriterion
from .phenotypes import (
    PHENOTYPE_KEYS,
    RealPhenotype,
    read_real_phenotypes,
    select_trace_files,
    store_phenotypes,
)
from .report import coverage_report, run_coverage

__all__ = ["MATCH_KEYS", "PHENOTYPE_KEYS", "MatchCriterion", "RealPhenotype", "coverage_report",
           "read_real_phenotypes", "run_coverage", "select_trace_files", "store_phenotypes"]
