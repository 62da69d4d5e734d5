"""Rngs: named streams of PRNG keys held as model state.

``Rngs(0)`` or ``Rngs(params=0, dropout=1)`` holds one :class:`RngStream` per
name. Calling a stream (``rngs.params()``, ``rngs['dropout']()``, ``rngs()``
for ``default``) returns a fresh key: the stream folds its call counter into its
key and increments the counter. Asking for a stream that does not exist falls
back to ``default``.

Keys and counters are Variables (:class:`RngKey`, :class:`RngCount`, both
:class:`RngState`), so RNG state splits, merges, checkpoints and crosses
transforms like any other state, and every stream carries its name as the
``tag`` metadata that filters match.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.pytree import Pytree
from ramie._src.core.variables import Variable
from ramie.errors import RngError, RngStreamNotFoundError


class RngState(Variable):
    """Base type of RNG state; ``ramie.RngState`` selects all of it."""

    __slots__ = ()


class RngKey(RngState):
    """The key of an RNG stream."""

    __slots__ = ()


class RngCount(RngState):
    """The call counter of an RNG stream."""

    __slots__ = ()


def as_key(value: Any) -> jax.Array:
    """An int seed, a typed key or raw ``uint32[2]`` key data, as a typed key."""
    if isinstance(value, Variable):
        value = value._raw
    if isinstance(value, int):
        return jax.random.key(value)
    if hasattr(value, "dtype"):
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            return value
        if value.dtype == jnp.uint32 and value.shape and value.shape[-1] == 2:
            return jax.random.wrap_key_data(value)
        if jnp.issubdtype(value.dtype, jnp.integer) and value.shape == ():
            return jax.random.key(value)
    raise TypeError(
        f"Expected an int seed or a PRNG key (jax.random.key(0)); got "
        f"{type(value).__name__}: {value!r}"
    )


@jax.jit
def _next_key(key: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jax.random.fold_in(key, count), count + 1


_SAMPLERS = (
    "ball", "bernoulli", "beta", "binomial", "bits", "categorical", "cauchy",
    "chisquare", "choice", "dirichlet", "double_sided_maxwell", "exponential",
    "f", "gamma", "generalized_normal", "geometric", "gumbel", "laplace",
    "loggamma", "logistic", "lognormal", "maxwell", "multivariate_normal",
    "normal", "orthogonal", "pareto", "permutation", "poisson", "rademacher",
    "randint", "rayleigh", "t", "triangular", "truncated_normal", "uniform",
    "wald", "weibull_min",
)  # fmt: skip


def _sampler(name: str):
    fn = getattr(jax.random, name)

    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(self(), *args, **kwargs)

    method.__doc__ = f"``jax.random.{name}`` with a fresh key from this stream."
    return method


# initializer constructors offered as keyless methods: `rngs.lecun_normal()(shape)`
_INITIALIZERS = (
    "delta_orthogonal", "glorot_normal", "glorot_uniform", "he_normal",
    "he_uniform", "kaiming_normal", "kaiming_uniform", "lecun_normal",
    "lecun_uniform", "variance_scaling", "xavier_normal", "xavier_uniform",
)  # fmt: skip


def _initializer(name: str):
    make = getattr(jax.nn.initializers, name)

    @functools.wraps(make)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        init = make(*args, **kwargs)

        def keyless(*init_args: Any, **init_kwargs: Any) -> Any:
            return init(self(), *init_args, **init_kwargs)

        return keyless

    method.__doc__ = (
        f"``jax.nn.initializers.{name}(...)`` as an initializer taking no key: "
        "each call draws a fresh key from this stream."
    )
    return method


def _add_methods(cls: type) -> None:
    for name in _SAMPLERS:
        if hasattr(jax.random, name):
            setattr(cls, name, _sampler(name))
    for name in _INITIALIZERS:
        if hasattr(jax.nn.initializers, name):
            setattr(cls, name, _initializer(name))


_CELL_MODES = frozenset(("hijax", "ref"))


class RngStream(Pytree):
    """One named stream of keys: a key plus a call counter.

    Example:
        >>> import ramie
        >>> stream = ramie.RngStream(0, tag="dropout")
        >>> k1, k2 = stream(), stream()
        >>> bool((k1 == k2).all()), int(stream.count.value)
        (False, 2)
    """

    def __init__(self, key: Any, *, tag: str):
        key = as_key(key)
        self.key = RngKey(key, tag=tag)
        self.count = RngCount(jnp.zeros(key.shape, dtype=jnp.uint32), tag=tag)
        self.tag = tag

    def __call__(self) -> jax.Array:
        """A fresh key (and advance the counter)."""
        key = self.key._raw
        if getattr(key, "ndim", 0) != 0:
            raise RngError(
                f"RngStream {self.tag!r}: its key has shape {tuple(key.shape)} (it was "
                "split, e.g. by ramie.split_rngs, for use inside vmap/scan), so it "
                "cannot produce a single key here.\n"
                "  Call it inside the transform that maps over the split keys, e.g.\n"
                "      @ramie.split_rngs(splits=n)\n"
                "      @ramie.vmap(in_axes=(0,))\n"
                "      def create(rngs): ..."
            )
        if not self.count._meta.keys() & _CELL_MODES:  # a Ref cell may be written
            self.count._check_mutable()  # before touching a key from another trace
        new_key, new_count = _next_key(key, self.count._raw)
        self.count.set_value(new_count)
        return new_key

    def fork(
        self, *, split: int | tuple[int, ...] | None = None, tag: str | None = None
    ) -> RngStream:
        """A new, independent stream seeded from this one (optionally split)."""
        key = self()
        if split is not None:
            key = jax.random.split(key, split)
        return RngStream(key, tag=self.tag if tag is None else tag)

    def split(self, k: int | tuple[int, ...]) -> RngStream:
        """A new stream whose key is split into shape ``k`` (for vmap/scan)."""
        return self.fork(split=k)

    def broadcast(self, k: int | tuple[int, ...]) -> RngStream:
        """A new stream whose key is the same key repeated ``k`` times."""
        key = self()
        shape = (k,) if isinstance(k, int) else tuple(k)
        return RngStream(jnp.broadcast_to(key, shape + key.shape), tag=self.tag)


_add_methods(RngStream)


class Rngs(Pytree):
    """A set of named RNG streams.

    Args:
        default: Seed (int) or key for the ``default`` stream.
        **rngs: Seeds or keys for other named streams.

    Example:
        >>> import ramie
        >>> rngs = ramie.Rngs(params=0, dropout=1)
        >>> rngs.params().shape, "dropout" in rngs
        ((), True)
        >>> fallback = ramie.Rngs(0)
        >>> _ = fallback.params()  # no 'params' stream: uses 'default'
        >>> int(fallback.default.count.value)
        1
    """

    def __init__(self, default: Any = None, /, **rngs: Any):
        if isinstance(default, Rngs):
            for name, stream in default.items():
                setattr(self, name, stream)
        elif default is not None:
            rngs = {"default": default, **rngs}
        for name, value in rngs.items():
            if isinstance(value, RngStream):
                stream = value
            else:
                stream = RngStream(value, tag=name)
            setattr(self, name, stream)

    def _stream(self, name: str) -> RngStream:
        d = self.__dict__
        stream = d.get(name)
        if isinstance(stream, RngStream):
            return stream
        default = d.get("default")
        if isinstance(default, RngStream):
            return default
        raise RngStreamNotFoundError(
            f"No RngStream named {name!r} in Rngs, and no 'default' stream to fall "
            "back to; "
            f"streams: {sorted(self._names())}.\n"
            f"  Create it: ramie.Rngs({name}=0, ...) or give a default: ramie.Rngs(0)"
        )

    def _names(self) -> list[str]:
        return [k for k, v in self.__dict__.items() if isinstance(v, RngStream)]

    def __getattr__(self, name: str) -> RngStream:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._stream(name)

    def __getitem__(self, name: str) -> RngStream:
        return self._stream(name)

    def __call__(self) -> jax.Array:
        """A fresh key from the ``default`` stream."""
        return self._stream("default")()

    def __contains__(self, name: object) -> bool:
        return isinstance(self.__dict__.get(name), RngStream)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def items(self) -> list[tuple[str, RngStream]]:
        return [(k, self.__dict__[k]) for k in self._names()]

    def fork(self, *, split: Any = None) -> Rngs:
        """New independent streams (optionally split); this Rngs advances by one.

        ``split`` is a shape for every stream, or a mapping from filters
        (stream names, ``...``) to shapes or None (forked, not split).
        """
        if not isinstance(split, Mapping):
            return Rngs(**{name: s.fork(split=split) for name, s in self.items()})
        return Rngs(
            **{
                name: s.fork(split=shape)
                for name, s, shape in self._per_stream(split, "fork")
            }
        )

    def split(self, k: Any) -> Rngs:
        """New Rngs whose streams are split into shape ``k`` (for vmap/scan).

        ``k`` is a shape, or a mapping from filters to shapes or None (that
        stream is kept as it is).
        """
        if not isinstance(k, Mapping):
            return self.fork(split=k)
        return Rngs(
            **{
                name: s if shape is None else s.fork(split=shape)
                for name, s, shape in self._per_stream(k, "split")
            }
        )

    def broadcast(self, k: Any) -> Rngs:
        """New Rngs whose streams hold one fresh key repeated to shape ``k``.

        ``k`` is a shape, or a mapping from filters (stream names, ``...``) to
        shapes or None (that stream is kept as it is).

        Example:
            >>> import ramie
            >>> rngs = ramie.Rngs(params=0, dropout=1)
            >>> out = rngs.broadcast({"params": 4, ...: None})
            >>> out.params.key.shape, out.dropout.key.shape
            ((4,), ())
        """
        if not isinstance(k, Mapping):
            k = {...: k}
        return Rngs(
            **{
                name: s if shape is None else s.broadcast(shape)
                for name, s, shape in self._per_stream(k, "broadcast")
            }
        )

    def _per_stream(
        self, shapes: Mapping[Any, Any], api: str
    ) -> list[tuple[str, RngStream, Any]]:
        """``(name, stream, shape)``: the first filter matching each stream wins."""
        from ramie._src.core.filters import to_predicate

        rules = []
        for f, shape in shapes.items():
            if isinstance(f, str):
                rules.append((lambda n, s, f=f: n == f or s.tag == f, shape))
            else:
                pred = to_predicate(f)
                rules.append((lambda n, s, p=pred: p((n,), s), shape))
        out = []
        for name, stream in self.items():
            for match, shape in rules:
                if match(name, stream):
                    out.append((name, stream, shape))
                    break
            else:
                out.append((name, stream, None))
        return out


_add_methods(Rngs)
