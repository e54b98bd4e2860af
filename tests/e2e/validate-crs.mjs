// Validates Prometheus Operator objects (ServiceMonitor, PrometheusRule) against the schemas
// of their CRDs as @kubernetes-models/prometheus-operator publishes them (JSON Schema, with the
// CRDs' patterns and enums). Unknown keys are caught by the TypeScript check beside it
// (run.sh), since CRD schemas allow them.
//   node validate-crs.mjs OBJECTS.json
import { readFileSync } from "node:fs";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { PrometheusRule, ServiceMonitor };
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const object of objects) {
  const Model = models[object.kind];
  const name = `${object.kind}/${object.metadata?.name}`;
  if (!Model) {
    console.error(`FAIL ${name}: no model for this kind`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`  ${name}: valid against monitoring.coreos.com/v1 ${object.kind}`);
  } catch (e) {
    console.error(`FAIL ${name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
