"""carbonlink from Python: the figures of a recorded demo, the model, a backtest, a fleet.

Record a demo first (the README's tour does), then run this from the repository root:

    .venv/bin/carbonlink demo --duration 60 --keep var/demo
    .venv/bin/python docs/examples/python_api.py var/demo

Every figure printed here is the one the API, the dashboard and ``carbonlink query`` show
for the same thing: they all read it through ``carbonlink.Figures``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import carbonlink as cl

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "carbonlink.yaml"
POLICIES = REPO / "config" / "policies"


def main(demo_dir: Path) -> None:
    settings = cl.load_config(CONFIG)

    # 1. Stored figures, each plant counted once under its current factor set version.
    with cl.open_store(demo_dir / "demo.sqlite") as store:
        figures = cl.Figures(store, settings)
        totals = figures.totals(by="plant")
        print("totals (t CO2e, 95% interval):")
        for row in totals.itertuples():
            print(
                f"  {row.plant:<14} {row.co2e_t:10.3f} t  "
                f"[{row.co2e_t_lower95:.3f}, {row.co2e_t_upper95:.3f}]  "
                f"{row.factor_set} {row.factor_version}"
            )
        print(f"  fleet total    {totals['co2e_t'].sum():10.3f} t")
        plant = str(totals.sort_values("co2e_t").iloc[-1]["plant"])
        hourly = figures.windows(plant, "1h", by="source")
        print(f"\n{plant}, hourly by source (kg CO2e):")
        print(hourly.pivot_table(index="window_start", columns="source", values="co2e_kg"))
        kpis = figures.kpis(plant).iloc[0]
        print(
            f"\n{plant} KPIs: {kpis['total_tco2e']:.3f} t CO2e, "
            f"carbon intensity {kpis['carbon_intensity']:.4g} t CO2e per {kpis['output_unit']}"
        )

        # 2. Policies replayed on the same recording, the coordinator's abatement added back.
        run = cl.run_backtest(
            settings,
            store,
            [POLICIES / "stage1.yaml", POLICIES / "stage3.yaml"],
            journal=demo_dir / "coordination-journal.sqlite",
        )
    print(f"\nbacktest over {run.hours:.2f} h (recorded abatement: {run.abatement_source}):")
    print(run.result.summary[["policy", "emissions_t", "value_total", "money"]].to_string())

    # 3. The model on its own: the three stages for one parameter file, in its money unit.
    solution = cl.solve(*cl.load_parameter_file(POLICIES / "reference.yaml"))
    for stage in solution.stages:
        print(
            f"stage {stage.stage}: steady-state capability X = {stage.X_ss:.3f}, "
            f"total value {stage.total:.1f} {solution.money.label}"
        )

    # 4. A seeded fleet, offline: the samples the meters would publish.
    samples = cl.run_offline(settings, start_ms=1_767_225_600_000, duration_s=3600, seed=7)
    print(f"\noffline fleet: {len(samples)} samples from {samples['plant'].nunique()} plants")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "var/demo"))
