"""Character-level word vectors, the DyNet autobatching paper's "BiLSTM w/char", shared by the examples.

A character BiLSTM reads each word; its last forward and first backward states are the word's vector. A word's
characters are one sequence, so its BiLSTM is one scan node, and the engine runs those of every word of the
minibatch as one kernel call.
"""
from .. import data
from .. import ops
from ..rnn import LSTM, BiRNN


class CharEncoder:
    """Character BiLSTM word vectors: ``chars`` is a ``data.Vocab`` of characters with an unknown token,
    ``dim`` the character embedding size and ``hidden`` (default ``dim``) the size per direction, so a word's
    vector has ``2 * hidden`` entries. Its parameters join ``pc`` as "C" (the embeddings), "cfwd" and "cbwd"."""

    def __init__(self, pc, chars, dim, hidden=None):
        if chars is None or chars.unk is None:
            raise ValueError("CharEncoder: char_dim > 0 needs chars, a character Vocab with an unknown token")
        self.chars, self.hidden = chars, int(hidden or dim)
        self.C = pc.add_lookup_parameters((len(chars), dim), name="C")
        self.bilstm = BiRNN(LSTM(pc, dim, self.hidden, name="cfwd"), LSTM(pc, dim, self.hidden, name="cbwd"))
        self._unk = [chars.index(chars.unk)]
        self._ids = {}  # word -> its character ids: a tree's words are encoded again every epoch

    @property
    def width(self):
        """The size of a word's vector."""
        return 2 * self.hidden

    def encode(self, words):
        """The character ids of each word (an empty word reads as the unknown character)."""
        ids = self._ids
        out = []
        for w in words:
            c = ids.get(w)
            if c is None:
                c = ids[w] = self.chars.encode(list(w)) or self._unk
            out.append(c)
        return out

    def vector(self, char_ids):
        """A word's vector [last forward state; first backward state] from its character ids."""
        hs = self.bilstm.transduce(self.C[list(char_ids)])
        H = self.hidden
        return ops.concat([ops.pick_range(ops.row(hs, -1), 0, H), ops.pick_range(ops.row(hs, 0), H, 2 * H)])

    def vectors(self, char_ids_per_word):
        """The vectors of a sentence's words, one sequence."""
        return ops.sequence([self.vector(c) for c in char_ids_per_word])


def char_vocab(words):
    """The character ``data.Vocab`` (with an unknown token) of the words ``words``."""
    return data.Vocab.build([list(w) for w in words])


def add_char_flags(ap):
    """``--char-dim`` and ``--char-hidden`` on the parser ``ap``."""
    ap.add_argument("--char-dim", type=int, default=0, metavar="N",
                    help="character embedding size of the character BiLSTM word vectors (default 0: off)")
    ap.add_argument("--char-hidden", type=int, default=32, metavar="N",
                    help="with --char-dim: the character BiLSTM's hidden size per direction (default 32)")


def check_char_flags(ap, args):
    """Refuses a negative ``--char-dim`` or a ``--char-hidden`` below 1, through ``ap.error``."""
    if args.char_dim < 0 or args.char_hidden < 1:
        ap.error(f"--char-dim must be at least 0 and --char-hidden at least 1, got {args.char_dim}, "
                 f"{args.char_hidden}")
