package main

import rego.v1

# Test inputs are built by functions: rego-cpp cannot take a plain variable or rule
# reference as a `with` value.
pod(spec) := {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}

safe_pod(extra) := pod(object.union({"containers": [{"name": "a", "image": "nginx:1", "securityContext": {"runAsNonRoot": true}}]}, extra))

container_pod(security_context) := pod({"containers": [{"name": "a", "image": "nginx:1", "securityContext": security_context}]})

test_privileged_denied if {
	count(deny_privileged) == 1 with input as container_pod({"privileged": true, "runAsNonRoot": true})
}

test_unprivileged_allowed if {
	count(deny_privileged) == 0 with input as safe_pod({})
}

test_run_as_root_denied if {
	count(deny_run_as_root) == 1 with input as pod({"containers": [{"name": "a", "image": "nginx:1"}]})
}

test_pod_level_run_as_non_root_allowed if {
	count(deny_run_as_root) == 0 with input as pod({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "a", "image": "nginx:1"}]})
}

test_container_level_run_as_non_root_allowed if {
	count(deny_run_as_root) == 0 with input as container_pod({"runAsNonRoot": true})
}

test_container_override_to_root_denied if {
	count(deny_run_as_root) == 1 with input as pod({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "a", "image": "nginx:1", "securityContext": {"runAsNonRoot": false}}]})
}

test_host_path_denied if {
	count(deny_host_path) == 1 with input as safe_pod({"volumes": [{"name": "h", "hostPath": {"path": "/var/run"}}]})
}

test_empty_dir_allowed if {
	count(deny_host_path) == 0 with input as safe_pod({"volumes": [{"name": "e", "emptyDir": {}}]})
}

test_host_network_denied if {
	count(deny_host_network) == 1 with input as safe_pod({"hostNetwork": true})
}

test_host_pid_denied if {
	count(deny_host_pid) == 1 with input as safe_pod({"hostPID": true})
}

test_host_namespaces_off_allowed if {
	count(deny_host_network) + count(deny_host_pid) == 0 with input as safe_pod({"hostNetwork": false, "hostPID": false})
}
