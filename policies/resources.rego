package main

import rego.v1

warn_missing_limits contains msg if {
	some c in workload_containers
	some resource in ["cpu", "memory"]
	not c.resources.limits[resource]
	msg := sprintf("container \"%s\" has no %s limit", [c.name, resource])
}
