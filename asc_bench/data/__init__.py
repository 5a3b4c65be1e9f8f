"""Stage 1 of a run: audio files in, decoded clips and dataset listings out (decoding, resampling, crop
policy, dataset resolution, listing fingerprints)."""
