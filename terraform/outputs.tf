output "project_id" {
  description = "Project everything was created in."
  value       = var.project_id
}

output "cluster_name" {
  description = "GKE cluster name."
  value       = google_container_cluster.this.name
}

output "cluster_location" {
  description = "GKE cluster location (region or zone), for `gcloud container clusters get-credentials --location`."
  value       = google_container_cluster.this.location
}

output "get_credentials_command" {
  description = "Command that writes the cluster's kubeconfig entry."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --location ${google_container_cluster.this.location} --project ${var.project_id}"
}

output "node_service_account" {
  description = "Email of the nodes' service account."
  value       = google_service_account.nodes.email
}

output "gpu_node_pools" {
  description = "GPU node pools and their capacity settings."
  value       = { for k, m in module.gpu_pool : k => m.pool }
}

output "data_bucket" {
  description = "Training data bucket (new objects under data_notification_prefix trigger retraining)."
  value       = module.bucket_data.name
}

output "models_bucket" {
  description = "Model registry bucket: gs://<bucket>/<model>/<version>/..."
  value       = module.bucket_models.name
}

output "checkpoints_bucket" {
  description = "Checkpoints bucket (objects deleted after checkpoint_retention_days)."
  value       = module.bucket_checkpoints.name
}

output "data_events_topic" {
  description = "Topic that receives OBJECT_FINALIZE notifications of the data bucket."
  value       = google_pubsub_topic.data_events.id
}

output "watcher_subscription" {
  description = "Full path of the watcher's subscription (projects/P/subscriptions/S)."
  value       = google_pubsub_subscription.watcher.id
}

output "retrain_requests_topic" {
  description = "Publish here to ask the watcher for a retraining run without new data."
  value       = google_pubsub_topic.retrain_requests.id
}

output "dead_letter_topic" {
  description = "Topic of messages the watcher rejected or Pub/Sub could not deliver."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription" {
  description = "Subscription holding messages the watcher failed to process."
  value       = google_pubsub_subscription.dead_letter.id
}

output "image_repository" {
  description = "Docker repository prefix for the images: <repository>/<image>:<tag>."
  value       = local.image_repository
}

output "k8s_namespace" {
  description = "Namespace of the training pods and the watcher."
  value       = var.k8s_namespace
}

output "trainer_ksa" {
  description = "Kubernetes service account of the training pods and the Google service account it must be annotated with."
  value = {
    namespace              = var.k8s_namespace
    name                   = var.trainer_ksa
    google_service_account = google_service_account.trainer.email
    annotation             = { "iam.gke.io/gcp-service-account" = google_service_account.trainer.email }
  }
}

output "watcher_ksa" {
  description = "Kubernetes service account of the watcher and its Google service account."
  value = {
    namespace              = var.k8s_namespace
    name                   = var.watcher_ksa
    google_service_account = google_service_account.watcher.email
    annotation             = { "iam.gke.io/gcp-service-account" = google_service_account.watcher.email }
  }
}

output "watcher_helm_values" {
  description = "Helm values for charts/retrain-watcher; `make cluster` writes them to terraform/generated/watcher-values.yaml."
  value       = local.watcher_values_yaml
}

output "data_notification_prefix" {
  description = "Prefix of the data bucket whose new objects notify the watcher."
  value       = var.data_notification_prefix
}

output "watcher_state_bucket" {
  description = "The watcher's durable state bucket (chart value gcp.stateBucket); objects expire after watcher_state_retention_days."
  value       = module.bucket_watcher_state.name
}

output "build_service_account" {
  description = "Service account `make images` runs Cloud Build as (null without enable_cloud_build)."
  value       = one(google_service_account.build[*].email)
}

output "build_bucket" {
  description = "Bucket `make images` stages Cloud Build sources in (null without enable_cloud_build)."
  value       = one(module.bucket_build[*].name)
}

output "bucket_names" {
  description = "Bucket names by purpose (make cluster adopts the ones that exist already, e.g. after make destroy KEEP_BUCKETS=1)."
  value       = local.bucket_names
}

output "github_workload_identity_provider" {
  description = "Full name of the GitHub OIDC provider (repository variable GCP_WORKLOAD_IDENTITY_PROVIDER); null without github_repository."
  value       = one(google_iam_workload_identity_pool_provider.github[*].name)
}

output "github_service_accounts" {
  description = "Service accounts for the workflows (repository variables GCP_DEPLOY_SERVICE_ACCOUNT, GCP_PLAN_SERVICE_ACCOUNT); null without github_repository."
  value = local.github ? {
    deploy = one(google_service_account.ci_deploy[*].email)
    plan   = one(google_service_account.ci_plan[*].email)
  } : null
}

output "alert_policies" {
  description = "Alert policy names by purpose."
  value       = { for k, p in google_monitoring_alert_policy.this : k => p.name }
}

output "managed_prometheus" {
  description = "Whether Managed Prometheus collects (make cluster then adds PodMonitorings for the operator and the watcher)."
  value       = var.enable_managed_prometheus
}
