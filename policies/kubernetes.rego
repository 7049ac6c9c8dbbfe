# Helpers shared by the default Sluice policies: where a pod spec lives in each
# workload kind, and every container of it.
#
# Every object is judged by every rule, so the library is written for the engine's
# costs (regorus): a builtin call or the first reference to another rule costs about
# as much as ten comparisons, and every rule definition is evaluated.  Rules
# therefore test cheap fields first, helpers are few, and tables that most objects
# never need sit behind a guard.
package main

import rego.v1

pod_spec := input.spec if input.kind == "Pod"

pod_spec := input.spec.template.spec if {
	input.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}
}

pod_spec := input.spec.jobTemplate.spec.template.spec if input.kind == "CronJob"

# Every container, including ephemeral debug containers.
all_containers := [c | some field in ["containers", "initContainers", "ephemeralContainers"]; some c in pod_spec[field]]

object_name := object.get(input, ["metadata", "name"], "")
