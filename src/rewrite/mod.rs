//! Equality saturation with egg: the language (same op spellings as `.qir`), petgraph <-> e-graph conversion, analysis, cost, rule files from `passes/`.
