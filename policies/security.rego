package main

import rego.v1

deny_privileged contains msg if {
	some c in all_containers
	c.securityContext.privileged == true
	msg := sprintf("container \"%s\" must not run privileged", [c.name])
}

# runAsNonRoot must be true on the container, or on the pod and not overridden with
# false on the container.
deny_run_as_root contains msg if {
	some c in all_containers
	c.securityContext.runAsNonRoot == false
	msg := run_as_root_message(c)
}

deny_run_as_root contains msg if {
	not pod_spec.securityContext.runAsNonRoot == true
	some c in all_containers
	not c.securityContext.runAsNonRoot == true
	msg := run_as_root_message(c)
}

run_as_root_message(c) := sprintf("container \"%s\" must set securityContext.runAsNonRoot: true (pod or container level)", [c.name])

deny_host_path contains msg if {
	some v in pod_spec.volumes
	v.hostPath
	msg := sprintf("volume \"%s\" must not mount a hostPath (%v)", [v.name, object.get(v.hostPath, "path", "")])
}

deny_host_network contains "pod must not use the host network (hostNetwork: true)" if {
	pod_spec.hostNetwork == true
}

deny_host_pid contains "pod must not share the host PID namespace (hostPID: true)" if {
	pod_spec.hostPID == true
}
