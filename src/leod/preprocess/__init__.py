"""Raw recordings to RVT's preprocessed layout: event histograms, filtered labels, frame indices."""
