// One k6 scenario per target, each an open model (ramping-arrival-rate): requests start at the
// planned rate whether or not earlier ones have answered, as Knative's vegeta-based SLO
// scenarios send them. The plan comes from run.py in LOAD_PLAN (JSON):
//   {"targets": [{"name", "url", "host"}], "stages": [[seconds, rate], ...], "timeout_s"}
// Each stage is a step: a 1 s ramp to its rate, then a hold (k6 ramps linearly within a stage).
import http from 'k6/http';

const plan = JSON.parse(__ENV.LOAD_PLAN);

function stages() {
  const out = [];
  for (const [seconds, rate] of plan.stages) {
    const ms = Math.round(seconds * 1000);
    const ramp = Math.min(1000, ms);
    out.push({ duration: `${ramp}ms`, target: rate });
    if (ms > ramp) out.push({ duration: `${ms - ramp}ms`, target: rate });
  }
  return out;
}

const scenarios = {};
for (const t of plan.targets) {
  const peak = Math.max(...plan.stages.map((s) => s[1]));
  scenarios[t.name] = {
    executor: 'ramping-arrival-rate',
    exec: 'hit',
    startRate: plan.stages[0][1],
    timeUnit: '1s',
    // A VU per request in flight: enough ready for the peak rate at a cold start's latency
    // (about 5 s here), since VUs started mid-run come late on a busy machine (and arrivals
    // meanwhile are dropped); the most for 20 s stalls.
    preAllocatedVUs: Math.ceil(peak * 5),
    maxVUs: Math.ceil(peak * 20),
    stages: stages(),
    env: { URL: t.url, HOST: t.host },
  };
}

export const options = { scenarios, discardResponseBodies: true, summaryTrendStats: ['p(50)', 'p(99)'] };

export function hit() {
  http.get(__ENV.URL, { headers: { Host: __ENV.HOST }, timeout: `${plan.timeout_s}s` });
}
