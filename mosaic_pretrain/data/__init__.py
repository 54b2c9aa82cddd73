"""Data: tokenizer and vocabulary, MDS conversion, streaming datasets, MLM collation."""
