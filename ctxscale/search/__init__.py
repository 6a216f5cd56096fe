"""Adaptive search for l*: a sweep that spends its trials where they decide l*(D).

`plan` holds the decisions (Ray-free: given the results so far, what runs next per data size and
why a data size stopped); `searcher` hands them to Ray Tune as a `Searcher`, so that the sweep
runner's scheduling, packing and storage apply unchanged. A spec turns it on with
`search: {method: adaptive}` (`ctxscale.spec.search`).
"""
