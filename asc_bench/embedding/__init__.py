"""Stage 2: clips in, embeddings out (Kaldi fbank, extraction, the content-addressed cache, weights-only
checkpoint reading, the HEAR adapter, MAC counting)."""
