"""``prefetch(array, index)``: a hint that ``array[index]`` will be read soon (LLVM
``llvm.prefetch``, read, high locality). It changes no value, only when memory arrives:
hash-map probes and block records are scattered over several MiB, so a walk that knows its
next addresses issues them early instead of waiting on one cache miss at a time.
Under ``NUMBA_DISABLE_JIT=1`` it is a no-op Python function.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

if numba.config.DISABLE_JIT:
    def prefetch(arr, idx):
        """No-op (plain-Python mode)."""
        return None
else:
    @intrinsic
    def prefetch(typingctx, arr, idx):
        """Prefetch the cache line holding ``arr[idx]`` (1-D array, integer index; no bounds check)."""
        if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(idx, types.Integer):
            return None
        sig = types.void(arr, idx)

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen
