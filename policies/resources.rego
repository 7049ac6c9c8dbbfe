package main

import rego.v1

# Containers that run the workload (not ephemeral debug containers) carry resources.
warn_missing_limits contains msg if {
	some field in ["containers", "initContainers"]
	some c in pod_spec[field]
	some resource in ["cpu", "memory"]
	not c.resources.limits[resource]
	msg := sprintf("container \"%s\" has no %s limit", [c.name, resource])
}
