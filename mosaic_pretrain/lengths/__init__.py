"""`mosaic-pretrain eval-lengths`: MLM loss of one or more models at several sequence lengths, on
the same documents at every length, to see whether a model extrapolates past its training length
(ALiBi has no position table; BERT's learned positions stop at theirs)."""
