"""Annotator agreement, annotator reliability, bias, expectation suites, report and gate."""
