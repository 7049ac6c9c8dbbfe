# Helpers shared by the default Sluice policies: where a pod spec lives in each
# workload kind, and every container of it.
package main

import rego.v1

pod_template_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}

pod_spec := input.spec if input.kind == "Pod"

pod_spec := input.spec.template.spec if input.kind in pod_template_kinds

pod_spec := input.spec.jobTemplate.spec.template.spec if input.kind == "CronJob"

# Containers that run the workload (and may carry resources).
workload_containers contains c if some c in pod_spec.containers

workload_containers contains c if some c in pod_spec.initContainers

# Every container, including ephemeral debug containers.
all_containers contains c if some c in workload_containers

all_containers contains c if some c in pod_spec.ephemeralContainers

object_name := object.get(input, ["metadata", "name"], "")
