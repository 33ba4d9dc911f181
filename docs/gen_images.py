"""Copy the benchmark plots into the built site, under results/img/.

Run by the mkdocs-gen-files plugin (mkdocs.yml) at build time: the plots stay in
benchmarks/results/ only, and results pages show them as `![...](img/NAME.png)`.
"""

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

for png in sorted(RESULTS.glob("*.png")):
    with mkdocs_gen_files.open(f"results/img/{png.name}", "wb") as out:
        out.write(png.read_bytes())
