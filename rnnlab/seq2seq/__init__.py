"""Sequence-to-sequence models and decoding over rnnlab's cells.

    model.py     encoder, bridge, decoder step, teacher forcing (pure functions)
    attention.py additive (Bahdanau) attention masked to valid source positions
    sampling.py  scheduled sampling / free running and the eps schedules
    decode.py    greedy decoding and beam search with length normalisation
    kind.py      the "seq2seq" model kind for the trainer (config -> init/apply)
    sequences.py token-array helpers (reversal of valid parts, target shifting)

The toy tasks (reverse, sort, addition) are tasks like any other: rnnlab.tasks.seq2seq.
"""
