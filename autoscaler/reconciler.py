"""The KPA PodAutoscaler reconciler: Knative's pkg/reconciler/autoscaling/kpa, over the API.

Theory of operation. Informers cache PodAutoscalers, ServerlessServices, Metrics, Deployments
(the scale targets) and the revision pods; their handlers only enqueue a PA key ("ns/name")
into a ``WorkQueue``. Every decider tick checks the PA too (``on_tick``): the reconciler is
level-based (issue 10, "no stuck revisions"). A tick enqueues the PA when the decision or the
KPA status moved since the last complete pass, or when the scale target's replicas are not the
decided ones, so a crash, a missed event or a forged write converges within one 2-s tick, and
a revision where everything agrees costs two dict reads per tick instead of a pass.

One pass, for a PA of class ``kpa.autoscaling.knative.dev`` whose bucket this replica leads:

1. SKS ``<ns>/<pa>``: created in Proxy mode with 2 activators if missing; ``NotOwned`` when
   another controller owns it. Until its ``status.privateServiceName`` is set the PA is
   ``SKSReady=Unknown(NotReady)`` and nothing else happens (Knative's order).
2. The decider (engine ``upsert``) from the PA's annotations, ``containerConcurrency``,
   ``reachability`` and config-autoscaler; a replica new to the PA restores the KPA status
   from the PA's conditions, so Active/Inactive timing survives a leader change.
3. Metric ``<ns>/<pa>``: created or updated (windows in nanoseconds, the scrape target).
4. Scale: the latest decision's scale (bounds, scale to zero, grace, activation timeout are
   the KPA pass's, kpa.py), compared with the target's ``spec.replicas`` (nil is 1), and
   patched on its ``/scale`` subresource when they differ. Before scaling to zero the
   activator must answer a probe in the revision's path, and the SKS must have been proxying
   (ActivatorEndpointsPopulated) for the grace period, or the PA inactive for as long.
   A new leader has asked nothing yet (scale unknown), so it never acts on a stale number:
   it reads the replicas from the target before any patch.
5. SKS mode (Serve when the revision wants pods and has excess burst capacity >= 0) and
   numActivators, by full Update when the spec differs.
6. PA status through ``/status`` (PUT, conflicts re-read and retried), written only when
   something changed.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from autoscaler.engine import AutoscalerEngine
from autoscaler.kpa import MIN_ACTIVATORS, ActiveState, PodAutoscalerStatus
from autoscaler.multiscaler import RevisionScaling
from autoscaler.pods import PodIndex
from autoscaler.resources import (
    CONDITION_READY,
    PaStatus,
    active_condition,
    condition,
    is_controlled_by,
    is_kpa,
    make_metric,
    make_sks,
    pa_status,
    parse_time,
    proxy_since,
    restore_status,
    revision_spec,
)
from shared.envconfig import ConfigError
from shared.kube.client import Conflict, KubeClient
from shared.kube.informer import EventType, InformerFactory
from shared.kube.resources import (
    DEPLOYMENTS,
    ENDPOINTS,
    METRICS,
    PODAUTOSCALERS,
    REVISION_LABEL,
    SERVERLESSSERVICES,
    Obj,
    Resource,
    key_of,
    labels_of,
    meta,
    resource_for,
)
from shared.kube.workqueue import WorkQueue
from shared.seams import Mode, RevisionKey

__all__ = [
    "ACTIVATOR_PROBE_HEADERS",
    "ActivatorProber",
    "HttpActivatorProber",
    "PodAutoscalerReconciler",
    "scale_resource",
]

log = logging.getLogger(__name__)

# Knative's activator probe (pkg/reconciler/autoscaling/kpa/scaler.go probeOptions).
ACTIVATOR_PROBE_HEADERS = {
    "K-Network-Probe": "activator",
    "User-Agent": "Knative-Autoscaling-Probe",
}
ACTIVATOR_PROBE_BODY = "activator"
PROBE_TIMEOUT_S = 1.0
# Knative's reenqeuePeriod: how soon a PA blocked on the activator probe is tried again.
REENQUEUE_S = 1.0
STATUS_RETRIES = 5

Owns = Callable[[RevisionKey], bool]


class ActivatorProber:
    """Is the activator in this revision's request path? (seam for tests)"""

    async def probe(self, pa: Obj, sks: Obj, endpoints: Obj | None) -> bool:
        raise NotImplementedError


class HttpActivatorProber(ActivatorProber):
    """Knative's activatorProbe: GET /healthz with ``K-Network-Probe: activator``.

    Knative probes ``<pa.status.serviceName>.<ns>.svc.<domain>:80``, the revision's public
    Service. knpy's local platform has no cluster DNS, so this probes an address of that
    Service's Endpoints ``<ns>/<rev>`` (its port named ``http``) instead: the Service fronts
    exactly those addresses, so it is the same check. In Proxy mode they are activators.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def probe(self, pa: Obj, sks: Obj, endpoints: Obj | None) -> bool:
        for address in public_addresses(endpoints):
            url = f"http://{address}/healthz"
            try:
                async with self._session.get(
                    url,
                    headers=ACTIVATOR_PROBE_HEADERS,
                    timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
                ) as resp:
                    if resp.status == 200 and (await resp.text()) == ACTIVATOR_PROBE_BODY:
                        return True
            except (aiohttp.ClientError, TimeoutError) as err:
                log.info("%s/%s: activator probe at %s failed: %s", *key_of(pa), url, err)
        return False


def public_addresses(endpoints: Obj | None) -> list[str]:
    """``ip:port`` of the ready addresses of an Endpoints object, under the port named http."""
    out: list[str] = []
    for subset in (endpoints or {}).get("subsets") or []:
        port = next(
            (p.get("port") for p in subset.get("ports") or [] if p.get("name") == "http"), None
        )
        if port is None:
            continue
        out += [f"{a['ip']}:{port}" for a in subset.get("addresses") or [] if a.get("ip")]
    return out


def scale_resource(ref: Obj) -> Resource:
    """The resource a scaleTargetRef names (Knative's ScaleResourceArguments).

    Kinds are pluralized by lower-casing plus "s", right for Deployments and ReplicaSets;
    an unusual kind would need discovery, which Knative reads through its duck informer.
    """
    api_version, kind = str(ref.get("apiVersion", "")), str(ref.get("kind", ""))
    known = resource_for(api_version, kind)
    if known is not None:
        return known
    group, _, version = api_version.rpartition("/")
    return Resource(group, version, kind.lower() + "s", kind)


class PodAutoscalerReconciler:
    """Reconciles KPA-class PodAutoscalers; see the module docstring."""

    def __init__(
        self,
        client: KubeClient,
        informers: InformerFactory,
        engine: AutoscalerEngine,
        pods: PodIndex,
        prober: ActivatorProber,
        *,
        owns: Owns = lambda _key: True,
        clock: Callable[[], float] = time.time,
        workers: int = 2,
    ) -> None:
        self._client = client
        self._engine = engine
        self._prober = prober
        self._owns = owns
        self._clock = clock
        self.pas = informers.informer(PODAUTOSCALERS)
        self.sks = informers.informer(SERVERLESSSERVICES)
        self.metrics = informers.informer(METRICS)
        self.deployments = informers.informer(DEPLOYMENTS)
        self.pods = pods
        # Backoff capped at 10 s, not client-go's 30 s: a decision is only good for seconds.
        self.queue: WorkQueue[str] = WorkQueue(
            "podautoscaler", self.reconcile, workers=workers, max_backoff_s=10.0
        )
        self._restored: set[RevisionKey] = set()
        # Per PA: the decision and KPA status its last complete pass wrote (see on_tick).
        self._reconciled: dict[RevisionKey, tuple[object, ...] | None] = {}
        self._refused: set[tuple[RevisionKey, object]] = set()  # (PA, generation) logged
        # Per PA: the target's resourceVersion when we last patched it, and the value; while
        # the informer still shows that version our patch has not been seen yet.
        self._patched: dict[RevisionKey, tuple[str, int]] = {}
        self.pas.add_handler(self._on_pa)
        self.sks.add_handler(self._on_owned)
        self.metrics.add_handler(self._on_owned)
        self.deployments.add_handler(self._on_labelled)
        pods.informer.add_handler(self._on_labelled)

    def __repr__(self) -> str:
        return f"<PodAutoscalerReconciler {self.queue!r}>"

    # -- enqueueing ----------------------------------------------------------------------
    def enqueue(self, key: RevisionKey) -> None:
        self.queue.add(f"{key.namespace}/{key.name}")

    def on_tick(self, key: RevisionKey) -> None:
        """After every decision: reconcile when the decision or the KPA status moved, or when
        the scale target does not hold the decided replicas (level-based: a crash or a forged
        write is undone within a tick), and skip the pass when everything already agrees."""
        tick = self._engine.latest(key)
        if tick is None or self._fingerprint(key) != self._reconciled.get(key):
            self.enqueue(key)
            return
        want = tick.decision.desired_scale
        pa = self.pas.get(key.namespace, key.name)
        if want >= 0 and pa is not None and self._replicas(pa) != want:
            self.enqueue(key)

    def _fingerprint(self, key: RevisionKey) -> tuple[object, ...] | None:
        tick, status = self._engine.latest(key), self._engine.multiscaler.status(key)
        if tick is None or status is None:
            return None
        d = tick.decision
        return (d.desired_scale, d.mode, d.activators, status.active, status.active_since,
                status.want, status.scale_target_initialized)  # fmt: skip

    def _replicas(self, pa: Obj) -> int | None:
        """The target's replicas from the Deployment informer (nil is 1); None otherwise."""
        ref = (pa.get("spec") or {}).get("scaleTargetRef") or {}
        if scale_resource(ref) != DEPLOYMENTS:
            return None
        target = self.deployments.get(key_of(pa)[0], str(ref.get("name", "")))
        if target is None:
            return None
        replicas = (target.get("spec") or {}).get("replicas")
        return 1 if replicas is None else int(replicas)

    def resync(self) -> None:
        """Every KPA-class PA again (config-autoscaler changed, a bucket was won or lost)."""
        for pa in self.pas.list():
            if is_kpa(pa):
                self.queue.add("/".join(key_of(pa)))
        for key in self._engine.decided():
            self.enqueue(key)

    def _on_pa(self, _event: EventType, pa: Obj) -> None:
        self.queue.add("/".join(key_of(pa)))

    def _on_owned(self, _event: EventType, obj: Obj) -> None:
        ns = key_of(obj)[0]
        for ref in meta(obj).get("ownerReferences") or []:
            if ref.get("kind") == PODAUTOSCALERS.kind and ref.get("controller"):
                self.queue.add(f"{ns}/{ref.get('name', '')}")

    def _on_labelled(self, _event: EventType, obj: Obj) -> None:
        revision = labels_of(obj).get(REVISION_LABEL)
        if revision:
            self.queue.add(f"{key_of(obj)[0]}/{revision}")

    async def start(self) -> None:
        await self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()

    # -- one pass --------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        ns, _, name = key.partition("/")
        rk = RevisionKey(ns, name)
        pa = self.pas.get(ns, name)
        if pa is None or not is_kpa(pa) or not self._owns(rk):
            self._forget(rk)
            return
        if meta(pa).get("deletionTimestamp"):
            return
        now = self._clock()  # pa is the informer's: read only, never changed in place
        sks = self.sks.get(ns, name)
        if sks is not None and not is_controlled_by(sks, pa):
            await self._not_owned(pa, "ServerlessService", name, now)
            return
        private = str((sks or {}).get("status", {}).get("privateServiceName") or "")
        if sks is None or not private:
            sks = await self._reconcile_sks(pa, sks, Mode.PROXY, MIN_ACTIVATORS)
            await self._write_status(pa, self._not_ready(pa, sks, rk, now), now)
            return
        try:
            scaling = self._engine.upsert(revision_spec(pa))
        except (ConfigError, ValueError) as err:
            # Once per generation: every pod event and tick would repeat it.
            generation = (rk, meta(pa).get("generation"))
            if generation not in self._refused:
                self._refused.add(generation)
                log.error("%s: not scaled: %s", key, err)
            return
        if scaling is None:
            return
        if rk not in self._restored:
            self._engine.restore(rk, restore_status(pa, sks, now))
            self._restored.add(rk)
        metric = self.metrics.get(ns, name)
        if metric is not None and not is_controlled_by(metric, pa):
            await self._not_owned(pa, "Metric", name, now)
            return
        await self._reconcile_metric(pa, metric, scaling, private)
        tick = self._engine.latest(rk) or await self._engine.tick(rk)
        if tick is None:
            return
        decision = tick.decision
        await self._scale(pa, sks, rk, decision.desired_scale, scaling, now)
        sks = await self._reconcile_sks(pa, sks, decision.mode, decision.activators)
        status = self._engine.multiscaler.status(rk)
        if status is None:
            return
        sks_status = sks.get("status") or {}
        ready_cond = condition(sks, CONDITION_READY) or {}
        await self._write_status(
            pa,
            PaStatus(
                service_name=str(sks_status.get("serviceName") or ""),
                metrics_service_name=private,
                desired_scale=status.want,
                actual_scale=self.pods.ready_count(rk),
                active=active_condition(status, self._engine.active_before(rk)),
                scale_target_initialized=status.scale_target_initialized
                and bool(sks_status.get("serviceName")),
                sks_ready=("True", "", "")
                if ready_cond.get("status") == "True"
                else ("Unknown", "NotReady", str(ready_cond.get("message") or "")),
            ),
            now,
        )
        self._reconciled[rk] = self._fingerprint(rk)

    def _not_ready(self, pa: Obj, sks: Obj, rk: RevisionKey, now: float) -> PaStatus:
        """Knative's computeStatus with want -1 while the SKS has no private service: the
        desired scale stays unknown (a known one is kept), Active follows the ready pods."""
        ready = self.pods.ready_count(rk)
        old = pa.get("status") or {}
        desired = old.get("desiredScale")
        keep = isinstance(desired, int) and desired >= 0
        active = condition(pa, "Active") or {}
        since = parse_time(active.get("lastTransitionTime")) or now
        if active.get("status") == "False":
            found_active = None  # inactive stays inactive with want -1
        elif ready >= 1:
            found_active = ("True", "", "", since if active.get("status") == "True" else now)
        else:
            found_active = active_condition(
                PodAutoscalerStatus(ActiveState.ACTIVATING, since, Mode.PROXY, None), None
            )
        return PaStatus(
            service_name=str((sks.get("status") or {}).get("serviceName") or ""),
            desired_scale=desired if keep else -1,
            actual_scale=ready,
            active=found_active,
            sks_ready=("Unknown", "NotReady", "no private service name"),
        )

    def _forget(self, rk: RevisionKey) -> None:
        self._engine.delete(rk)
        self._refused = {r for r in self._refused if r[0] != rk}
        self._restored.discard(rk)
        self._patched.pop(rk, None)
        self._reconciled.pop(rk, None)

    async def _not_owned(self, pa: Obj, kind: str, name: str, now: float) -> None:
        message = f'There is an existing {kind} "{name}" that we do not own.'
        await self._write_status(pa, PaStatus(active=("False", "NotOwned", message, now)), now)

    # -- SKS and Metric ---------------------------------------------------------------------
    async def _reconcile_sks(self, pa: Obj, sks: Obj | None, mode: Mode, activators: int) -> Obj:
        ns, name = key_of(pa)
        want = make_sks(pa, mode, activators)
        if sks is None:
            log.info("%s/%s: creating SKS (%s)", ns, name, want["spec"]["mode"])
            return await self._client.create(SERVERLESSSERVICES, ns, want)
        if sks.get("spec") == want["spec"]:
            return sks
        body = copy.deepcopy(sks)
        body["spec"] = want["spec"]
        log.info("%s/%s: SKS %s, %d activators", ns, name, want["spec"]["mode"], activators)
        return await self._client.replace(SERVERLESSSERVICES, ns, name, body)

    async def _reconcile_metric(
        self, pa: Obj, metric: Obj | None, scaling: RevisionScaling, private: str
    ) -> None:
        ns, name = key_of(pa)
        want = make_metric(pa, scaling, private)
        if metric is None:
            await self._client.create(METRICS, ns, want)
        elif metric.get("spec") != want["spec"]:
            body = copy.deepcopy(metric)
            body["spec"] = want["spec"]
            await self._client.replace(METRICS, ns, name, body)

    # -- scale -------------------------------------------------------------------------------
    async def _current(self, pa: Obj) -> tuple[Obj | None, Resource, str]:
        """The scale target (Knative's PodScalable), from the informer for Deployments."""
        ns = key_of(pa)[0]
        ref = (pa.get("spec") or {}).get("scaleTargetRef") or {}
        resource, name = scale_resource(ref), str(ref.get("name", ""))
        if resource == DEPLOYMENTS:
            return self.deployments.get(ns, name), resource, name
        return await self._client.get(resource, ns, name), resource, name

    async def _scale(
        self,
        pa: Obj,
        sks: Obj,
        rk: RevisionKey,
        want: int,
        scaling: RevisionScaling,
        now: float,
    ) -> None:
        if want < 0:
            return  # nothing asked yet (a new decider): leave the target as it is
        target, resource, name = await self._current(pa)
        if target is None:
            log.warning("%s: scale target %s %s not found", rk, resource.kind, name)
            return
        replicas = (target.get("spec") or {}).get("replicas")
        current = 1 if replicas is None else int(replicas)
        rv = str(meta(target).get("resourceVersion", ""))
        if want == current:
            return
        if self._patched.get(rk) == (rv, want):
            return  # our patch is not in the informer yet
        if want == 0 and not await self._may_scale_to_zero(pa, sks, rk, scaling, now):
            self.queue.add_after(f"{rk.namespace}/{rk.name}", REENQUEUE_S)
            return
        log.info("%s: scaling %s %s from %d to %d", rk, resource.kind, name, current, want)
        await self._client.patch(
            resource,
            rk.namespace,
            name,
            [{"op": "add", "path": "/spec/replicas", "value": want}],
            "json",
            subresource="scale",
        )
        self._patched[rk] = (rv, want)

    async def _may_scale_to_zero(
        self, pa: Obj, sks: Obj, rk: RevisionKey, scaling: RevisionScaling, now: float
    ) -> bool:
        """Knative's last checks before zero: the activator answers in the revision's path,
        and it has been there for the grace period (or the PA inactive for as long)."""
        if self._engine.active_before(rk) is ActiveState.ACTIVATING:
            return True  # activation timed out: Knative scales down without probing
        endpoints_name = str((sks.get("status") or {}).get("serviceName") or rk.name)
        endpoints = await self._client.get(ENDPOINTS, rk.namespace, endpoints_name)
        if not await self._prober.probe(pa, sks, endpoints):
            log.info("%s: not yet backed by the activator, not scaling to zero", rk)
            return False
        grace = scaling.kpa.scale_to_zero_grace_period_s
        status = self._engine.multiscaler.status(rk)
        if status is not None and status.inactive_for(now) >= grace:
            return True
        since = proxy_since(sks)
        return since is not None and now - since >= grace

    # -- status ------------------------------------------------------------------------------
    async def _write_status(self, pa: Obj, found: PaStatus, now: float) -> None:
        """PUT /status when it changed; on a conflict re-read the PA and apply again."""
        ns, name = key_of(pa)
        current: Obj | None = pa
        for _ in range(STATUS_RETRIES):
            assert current is not None
            new = pa_status(current, found, now)
            if new == current.get("status"):
                return
            body: dict[str, Any] = copy.deepcopy(current)
            body["status"] = new
            try:
                await self._client.replace_status(PODAUTOSCALERS, ns, name, body)
                return
            except Conflict:
                current = await self._client.get(PODAUTOSCALERS, ns, name)
                if current is None:
                    return
        raise Conflict(409, "Conflict", f"status of {ns}/{name}: too many conflicts")
