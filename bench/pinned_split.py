"""A --parallel string with every dimension pinned, the ones left out at their defaults (dp
filling the devices pp x tp leave, ZeRO 0, one micro-batch, no recomputation): `vacc train`
plans any dimension a --parallel leaves out, so a benchmark of a named split pins it whole."""


def pin_split(split, devices):
    keys = dict(item.split("=", 1) for item in split.split(",") if item)
    pp, tp = int(keys.get("pp", 1)), int(keys.get("tp", 1))
    keys.setdefault("dp", str(devices // (pp * tp)))
    keys.setdefault("pp", "1")
    keys.setdefault("tp", "1")
    keys.setdefault("zero", "0")
    keys.setdefault("microbatches", "1")
    keys.setdefault("recompute", "none")
    return ",".join(f"{k}={v}" for k, v in keys.items())
