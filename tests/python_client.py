"""Drives the API server with the official Kubernetes Python client: list,
create, watch and patch, as a client-go-independent check of the API.
Usage: python_client.py KUBECONFIG. Exits non-zero with a message on failure."""
import sys
import threading

from kubernetes import client, config, watch


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    names = sorted(ns.metadata.name for ns in core.list_namespace().items)
    assert "kube-system" in names and "default" in names, names

    seen = []
    started = threading.Event()

    def watch_configmaps():
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=20,
                              field_selector="metadata.name=py-made"):
            started.set()
            seen.append((event["type"], event["object"].data))
            if event["type"] == "MODIFIED":
                w.stop()

    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-made", labels={"from": "python"}), data={"k": "1"})
    core.create_namespaced_config_map("default", body)
    thread = threading.Thread(target=watch_configmaps)
    thread.start()
    started.wait(10)
    patched = core.patch_namespaced_config_map("py-made", "default", {"data": {"k": "2"}})
    assert patched.data == {"k": "2"}, patched.data
    thread.join(20)
    assert seen == [("ADDED", {"k": "1"}), ("MODIFIED", {"k": "2"})], seen

    listed = core.list_namespaced_config_map("default", label_selector="from=python")
    assert [cm.metadata.name for cm in listed.items] == ["py-made"], listed.items
    try:
        core.read_namespaced_config_map("missing", "default")
        raise AssertionError("reading a missing configmap must fail")
    except client.exceptions.ApiException as err:
        assert err.status == 404, err.status
    apps = client.AppsV1Api()
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "py-web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "py"}},
                 "template": {"metadata": {"labels": {"app": "py"}},
                              "spec": {"containers": [{"name": "web", "image": "busybox"}]}}},
    }
    apps.create_namespaced_deployment("default", deployment)
    scaled = apps.patch_namespaced_deployment_scale("py-web", "default", {"spec": {"replicas": 3}})
    assert scaled.spec.replicas == 3, scaled
    print("python client ok")


if __name__ == "__main__":
    main(sys.argv[1])
