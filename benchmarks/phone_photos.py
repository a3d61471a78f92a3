"""How long the full default verdict takes on 12-megapixel phone-sized photos (issue 25).

Phone photos are 4032x3024 JPEGs; the closest real photos in ``../shared/photos`` are the
Dresden camera originals (10 MP), so each test photo is one of them cropped to 4:3 and resized
to 4032x3024 (Lanczos), saved as a phone does (JPEG quality 92, 4:2:0 chroma). Every photo
goes through ``Localizer().predict`` (the shipped default for this machine, network and
copy-move evidence) ``--rounds`` times after a warm-up; printed: each time, the median, the
peak RSS of the process, the model file and the CPU. ``--profile`` adds the stage-by-stage
breakdown of the first photo (``cflnet benchmark --profile``).

    python benchmarks/phone_photos.py [--photos ../shared/photos/dresden] [--count 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "photos" / "dresden"
PHONE_SIZE = (4032, 3024)


def phone_photo(source: Path, out: Path) -> Path:
    """``source`` cropped to 4:3 at its centre, resized to 4032x3024, saved as a phone JPEG."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        width, height = image.size
        crop = min(width, height * 4 // 3)
        left = (width - crop) // 2
        image = image.crop((left, 0, left + crop, crop * 3 // 4))
        image.resize(PHONE_SIZE, Image.LANCZOS).save(out, quality=92, subsampling=2)
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    from cflnet_sdk import Localizer
    from cflnet_sdk.runtime.base import cpu_count
    from cflnet_sdk.runtime.benchmark import peak_rss_mb
    from cflnet_sdk.runtime.profile import profile_photo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="camera JPEGs to start from")
    parser.add_argument("--count", type=int, default=3, help="test photos")
    parser.add_argument("--rounds", type=int, default=3, help="timed predicts per photo")
    parser.add_argument("--profile", action="store_true", help="stage breakdown of photo 1")
    args = parser.parse_args()
    sources = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    sources = sources[:: max(1, len(sources) // args.count)][: args.count]
    with tempfile.TemporaryDirectory(prefix="cflnet-phone-") as scratch, Localizer() as loc:
        photos = [phone_photo(s, Path(scratch) / f"phone-{s.stem}.jpg") for s in sources]
        print(f"{loc.path.name} ({loc.precision}) on {loc.backend_name} {loc.device}, "
              f"copy-move {'on' if loc.fusion else 'off'}; {cpu_name()}, {cpu_count()} cores")
        loc.predict(photos[0])
        times: dict[str, list[float]] = {p.name: [] for p in photos}
        for _ in range(args.rounds):
            for photo in photos:
                start = time.perf_counter()
                loc.predict(photo)
                times[photo.name].append(time.perf_counter() - start)
        for name, seconds in times.items():
            print(f"{name}: " + ", ".join(f"{s:.2f}" for s in seconds) + " s")
        every = [s for seconds in times.values() for s in seconds]
        print(f"median {statistics.median(every):.2f} s over {len(every)} predicts of "
              f"{PHONE_SIZE[0]}x{PHONE_SIZE[1]} photos; peak RSS {peak_rss_mb():,.0f} MB")
        if args.profile:
            print(profile_photo(loc, photos[0]).format())


if __name__ == "__main__":
    main()
