package main

import rego.v1

deployment(containers) := {
	"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
	"spec": {"template": {"spec": {"containers": containers}}},
}

test_latest_tag_denied if {
	count(deny_latest_tag) == 1 with input as deployment([{"name": "a", "image": "nginx:latest"}])
}

test_untagged_image_denied if {
	count(deny_latest_tag) == 1 with input as deployment([{"name": "a", "image": "registry:5000/team/nginx"}])
}

test_pinned_tag_and_digest_allowed if {
	count(deny_latest_tag) == 0 with input as deployment([
		{"name": "a", "image": "registry:5000/nginx:1.25"},
		{"name": "b", "image": "nginx@sha256:0123456789abcdef"},
	])
}

# Test inputs are built by functions: rego-cpp cannot take a plain variable or rule
# reference as a `with` value.
pod_with_all_container_types(_) := {"kind": "Pod", "metadata": {"name": "p"}, "spec": {
	"containers": [{"name": "a", "image": "nginx:1"}],
	"initContainers": [{"name": "i", "image": "busybox"}],
	"ephemeralContainers": [{"name": "e", "image": "debug:latest"}],
}}

cronjob(image) := {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": image}]}}}}}}

workload(kind) := object.union(deployment([{"name": "a", "image": "nginx:latest"}]), {"kind": kind})

test_init_and_ephemeral_containers_checked if {
	count(deny_latest_tag) == 2 with input as pod_with_all_container_types(1)
}

test_cronjob_job_template_checked if {
	count(deny_latest_tag) == 1 with input as cronjob("nginx:latest")
}

test_every_workload_kind_checked if {
	every kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"] {
		count(deny_latest_tag) == 1 with input as workload(kind)
	}
}
