package main

import rego.v1

limited_pod(limits) := {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "nginx:1", "resources": {"limits": limits}}]}}

test_missing_limits_warned if {
	warn_missing_limits == {"container \"a\" has no memory limit"} with input as limited_pod({"cpu": "1"})
}

test_limits_set_allowed if {
	count(warn_missing_limits) == 0 with input as limited_pod({"cpu": "1", "memory": "1Gi"})
}
