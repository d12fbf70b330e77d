"""Phase selection: curated subsets: select_traces (NaturalThoughts), select_targeted."""
