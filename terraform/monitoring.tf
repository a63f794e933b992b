# Alert policies for what needs a person (PromQL over Google Cloud Managed
# Service for Prometheus; the watcher's metrics come from the chart's
# PodMonitoring, pods' from GKE's kube-state-metrics package "POD", GPUs' from
# DCGM). Every metric name used here is checked against what the watcher
# exports (jobgen/watcher/obs.py) by tests/terraform/test_observability.py.

locals {
  all_alerts = {
    dead_lettered = {
      display_name = "${var.name}: retraining messages dead-lettered"
      # The watcher's own rejects, and Pub/Sub's after max_delivery_attempts.
      query    = "sum(increase(retrain_dead_lettered_total[10m])) > 0 or sum(increase(pubsub_googleapis_com:subscription_dead_letter_message_count{monitored_resource=\"pubsub_subscription\",subscription_id=~\"${var.name}-retrain-watcher|${var.name}-retrain-requests-watcher\"}[10m])) > 0"
      duration = "0s"
      severity = "WARNING"
      documentation = join("\n", [
        "Messages about new training data went to the dead-letter topic ${var.name}-data-events-dead-letter: their data did not trigger a job.",
        "Inspect them: gcloud pubsub subscriptions pull ${var.name}-data-events-dead-letter --project ${var.project_id} --limit 10 (attribute reason says why).",
      ])
    }
    watcher_not_ready = {
      display_name = "${var.name}: retraining watcher not ready for 10 minutes"
      # Absent (no pod scraped) counts as not ready.
      query    = "(max(retrain_ready{namespace=\"${var.k8s_namespace}\"}) or on() vector(0)) < 1"
      duration = "600s"
      severity = "ERROR"
      documentation = join("\n", [
        "The watcher has not been ready for 10 minutes: uploads are queued in Pub/Sub (up to 7 days) but no job starts.",
        "kubectl -n ${var.k8s_namespace} describe deploy -l app.kubernetes.io/name=retrain-watcher; metric retrain_outage{backend} names the unreachable backend.",
      ])
    }
    gpu_idle = {
      display_name = "${var.name}: GPU nodes idle for ${var.gpu_idle_alert_minutes} minutes"
      # GPUs reported by DCGM while no Running pod requests any GPU.
      query    = "(count(DCGM_FI_DEV_GPU_UTIL) > 0) unless on() (sum(kube_pod_container_resource_requests{resource=\"nvidia_com_gpu\"} * on(pod, exported_namespace) group_left() (kube_pod_status_phase{phase=\"Running\"} == 1)) > 0)"
      duration = "${var.gpu_idle_alert_minutes * 60}s"
      severity = "WARNING"
      documentation = join("\n", [
        "GPU nodes have been up for ${var.gpu_idle_alert_minutes} minutes with no running pod using a GPU: they cost money for nothing.",
        "Check for stuck or finished jobs holding nodes (make status), pods that cannot schedule, or min_nodes > 0 in gpu_pools.",
      ])
    }
  }

  # The idle-GPU alert reads DCGM metrics.
  alerts = { for k, v in local.all_alerts : k => v if var.enable_alert_policies && (k != "gpu_idle" || var.enable_dcgm_metrics) }
}

resource "google_monitoring_alert_policy" "this" {
  for_each = local.alerts

  project               = var.project_id
  display_name          = each.value.display_name
  combiner              = "OR"
  severity              = each.value.severity
  notification_channels = var.alert_notification_channels
  user_labels           = merge(var.labels, { platform = "jobgen", cluster = var.name })

  conditions {
    display_name = each.value.display_name

    condition_prometheus_query_language {
      query               = each.value.query
      duration            = each.value.duration
      evaluation_interval = "60s"
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  documentation {
    content   = each.value.documentation
    mime_type = "text/markdown"
  }
}
