// The type the Grafana dashboard JSON must satisfy, for `tsc --strict` (tests/e2e/run.sh).
//
// The dashboard is checked against @grafana/schema's published Dashboard type, with every
// panel's `options` and `fieldConfig.defaults.custom` checked against that panel plugin's own
// published types, so a misspelt or misplaced key fails (TypeScript rejects unknown keys in
// an object literal). @grafana/schema leaves query targets as Record<string, unknown>; here
// they are Prometheus queries, typed after the fields Grafana's Prometheus data source reads.
import type * as schema from "@grafana/schema";
import type * as bargauge from "@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen";
import type * as stat from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type * as table from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";
import type * as timeseries from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";

// Grafana's types use TypeScript enums; dashboard JSON holds their values. String enums become
// the union of their values; numeric enums accept exactly their members' numbers.
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

export interface PrometheusQuery extends schema.DataQuery {
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  format?: "time_series" | "table" | "heatmap";
  editorMode?: "code" | "builder";
  interval?: string;
}

type TypedPanel<Type extends string, Options, Custom> = Omit<
  schema.Panel,
  "type" | "options" | "fieldConfig" | "targets"
> & {
  type: Type;
  options: Options;
  fieldConfig: Omit<schema.FieldConfigSource, "defaults"> & {
    defaults: Omit<schema.FieldConfig, "custom"> & { custom?: Custom };
  };
  targets: PrometheusQuery[];
};

export type DashboardPanel =
  | TypedPanel<"timeseries", timeseries.Options, timeseries.FieldConfig>
  | TypedPanel<"stat", stat.Options, never>
  | TypedPanel<"bargauge", bargauge.Options, never>
  | TypedPanel<"table", table.Options, table.FieldConfig>
  | (Omit<schema.RowPanel, "panels"> & { panels: DashboardPanel[] });

export type CheckedDashboard = Json<
  Omit<schema.Dashboard, "panels"> & { panels: DashboardPanel[] }
>;

// What the checked dashboard must also be: a Dashboard as @grafana/schema publishes it.
export type PublishedDashboard = Json<schema.Dashboard>;
