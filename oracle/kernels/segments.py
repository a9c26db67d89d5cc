"""Content segments of generated conversations (``oracle.workload.generate``, module docstring step 5).

Turn 0 of a session is ``[system prompt] + [input] + [output]``; turn k >= 1 is the whole
segment list of its fork base (an earlier turn of the same session, so a smaller request id)
followed by ``[input] + [output]``. Both kernels walk the requests in id order, so a fork
base is always complete before a request copies it: one pass, no per-turn-index levels.
"""

from __future__ import annotations

from oracle.kernels._jit import jit


@jit
def segment_counts(turn, fork_req, first_nseg, first_total, inp, out, nseg, total):
    """Segments and tokens (prompt + output) of every request.

    in: turn (i8[n]), fork_req (i8[n], the fork base's id, < i for turn >= 1), first_nseg /
    first_total (i8[n], used where turn == 0), inp / out (i8[n], new input and output tokens).
    out: nseg (i8[n]), total (i8[n]).
    """
    for i in range(turn.shape[0]):
        if turn[i] == 0:
            nseg[i] = first_nseg[i]
            total[i] = first_total[i]
        else:
            f = fork_req[i]
            nseg[i] = nseg[f] + 2
            total[i] = total[f] + inp[i] + out[i]


@jit
def fill_segments(turn, fork_req, offsets, has_sys, sys_key, sys_len, in_key, inp, out_key, out, seg_key,
                  seg_len):
    """Write every request's segments (CSR, ``offsets`` from :func:`segment_counts`' nseg).

    in: turn, fork_req (i8[n]), offsets (i8[n+1]), has_sys (bool[n]), sys_key (u8[n]),
    sys_len (i8[n]), in_key (u8[n]), inp (i8[n]), out_key (u8[n]), out (i8[n]).
    out: seg_key (u8[offsets[n]]), seg_len (i4[offsets[n]]).
    """
    for i in range(turn.shape[0]):
        p = offsets[i]
        if turn[i] == 0:
            if has_sys[i]:
                seg_key[p] = sys_key[i]
                seg_len[p] = sys_len[i]
                p += 1
        else:
            a = offsets[fork_req[i]]
            m = offsets[fork_req[i] + 1] - a
            for x in range(m):
                seg_key[p + x] = seg_key[a + x]
                seg_len[p + x] = seg_len[a + x]
            p += m
        seg_key[p] = in_key[i]
        seg_len[p] = inp[i]
        seg_key[p + 1] = out_key[i]
        seg_len[p + 1] = out[i]
