# ---------------------------------------------------------------- project ----

variable "project_id" {
  description = "GCP project to create everything in."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 lowercase letters, digits and hyphens, starting with a letter), not a project name or number."
  }
}

variable "region" {
  description = "Region for the cluster, network, buckets, registry and Pub/Sub."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region such as us-central1, not a zone."
  }
}

variable "zone" {
  description = "Set to a zone of `region` for a zonal cluster (cheaper control plane, one zone of nodes by default); null for a regional cluster."
  type        = string
  default     = null

  validation {
    condition     = var.zone == null || can(regex("^${var.region}-[a-z]$", var.zone))
    error_message = "zone must be a zone of region, e.g. us-central1-a for us-central1."
  }
}

variable "name" {
  description = "Name of the cluster; also the prefix of the network, service accounts, topics and registry."
  type        = string
  default     = "jobgen"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{0,18}[a-z0-9]$", var.name))
    error_message = "name must be 2-20 lowercase letters, digits or hyphens, starting with a letter (it prefixes service account ids, which are limited to 30 characters)."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- cluster ----

variable "release_channel" {
  description = "GKE release channel."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE", "EXTENDED"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR, STABLE or EXTENDED."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the cluster (and the buckets' objects) in terraform destroy/apply. `make destroy` turns it off first, after asking."
  type        = bool
  default     = true
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the control plane endpoint. Empty: only the nodes' subnet (and Google-internal access)."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0))])
    error_message = "every master_authorized_networks cidr_block must be a CIDR block such as 203.0.113.0/24."
  }
  validation {
    condition     = alltrue([for n in var.master_authorized_networks : n.cidr_block != "0.0.0.0/0"])
    error_message = "master_authorized_networks must not contain 0.0.0.0/0: list the networks you administer from."
  }
}

variable "enable_private_endpoint" {
  description = "Make the control plane reachable only on its private endpoint (from the VPC or peered/VPN networks)."
  type        = bool
  default     = false
}

variable "master_ipv4_cidr_block" {
  description = "A /28 for the control plane's private endpoint."
  type        = string
  default     = "172.16.0.0/28"

  validation {
    condition     = can(cidrhost(var.master_ipv4_cidr_block, 0)) && endswith(var.master_ipv4_cidr_block, "/28")
    error_message = "master_ipv4_cidr_block must be a /28 CIDR block."
  }
}

variable "subnet_cidr" {
  description = "Primary range of the nodes' subnet."
  type        = string
  default     = "10.10.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR block."
  }
}

variable "pods_cidr" {
  description = "Secondary range for pods."
  type        = string
  default     = "10.20.0.0/14"

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be a CIDR block."
  }
}

variable "services_cidr" {
  description = "Secondary range for services."
  type        = string
  default     = "10.30.0.0/20"

  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be a CIDR block."
  }
}

variable "enable_managed_prometheus" {
  description = "Google Cloud Managed Service for Prometheus."
  type        = bool
  default     = true
}

variable "enable_dcgm_metrics" {
  description = "Collect NVIDIA DCGM GPU metrics (needs enable_managed_prometheus)."
  type        = bool
  default     = false

  validation {
    condition     = !var.enable_dcgm_metrics || var.enable_managed_prometheus
    error_message = "enable_dcgm_metrics needs enable_managed_prometheus = true (GKE collects DCGM metrics through managed Prometheus)."
  }
}

variable "database_encryption_key" {
  description = "Optional CMEK for application-layer encryption of Kubernetes Secrets (projects/P/locations/REGION/keyRings/R/cryptoKeys/K)."
  type        = string
  default     = null
}

variable "rbac_security_group" {
  description = "Optional Google Groups for RBAC: gke-security-groups@<your domain> (needs Google Workspace or Cloud Identity)."
  type        = string
  default     = null

  validation {
    condition     = var.rbac_security_group == null || startswith(coalesce(var.rbac_security_group, "x"), "gke-security-groups@")
    error_message = "rbac_security_group must be gke-security-groups@<domain>."
  }
}

variable "maintenance_window" {
  description = "Daily maintenance window start time (UTC, HH:MM); null lets GKE choose."
  type        = string
  default     = "03:00"

  validation {
    condition     = var.maintenance_window == null || can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_window))
    error_message = "maintenance_window must be HH:MM (UTC) or null."
  }
}

# ------------------------------------------------------------- node pools ----

variable "system_pool" {
  description = "The always-on pool for system pods, the operator and the watcher; min_nodes and max_nodes are totals across the cluster's zones."
  type = object({
    machine_type = optional(string, "e2-standard-4")
    min_nodes    = optional(number, 1)
    max_nodes    = optional(number, 3)
    disk_size_gb = optional(number, 100)
    spot         = optional(bool, false)
  })
  default = {}

  validation {
    condition     = var.system_pool.min_nodes >= 1 && var.system_pool.min_nodes <= var.system_pool.max_nodes
    error_message = "system_pool needs 1 <= min_nodes <= max_nodes (totals across the cluster's zones)."
  }
}

variable "gpu_pools" {
  description = <<-EOT
    GPU node pools. Each scales from min_nodes (default 0) to max_nodes in total, carries the
    nvidia.com/gpu=present:NoSchedule taint and gets GKE-installed drivers. zones: null looks up
    the zones of the region that offer the machine type (and its built-in GPUs); N1 machine
    types with attached GPUs must list their zones.
  EOT
  type = list(object({
    name                = string
    machine_type        = string
    accelerator_type    = string
    accelerator_count   = number
    gpu_driver_version  = optional(string, "LATEST")
    zones               = optional(list(string))
    min_nodes           = optional(number, 0)
    max_nodes           = number
    spot                = optional(bool, false)
    queued_provisioning = optional(bool, false)
    flex_start          = optional(bool, false)
    placement_policy    = optional(string, "NONE")
    reservation         = optional(string, "NO_RESERVATION")
    reservation_name    = optional(string)
    disk_size_gb        = optional(number, 200)
    disk_type           = optional(string, "pd-balanced")
    local_ssd_count     = optional(number, 0)
    labels              = optional(map(string), {})
  }))
  default = []

  validation {
    condition     = length(distinct([for p in var.gpu_pools : p.name])) == length(var.gpu_pools)
    error_message = "gpu_pools names must be unique."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : p.name != "system"])
    error_message = "gpu_pools: \"system\" is the system pool's name."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : p.min_nodes >= 0 && p.min_nodes <= p.max_nodes])
    error_message = "gpu_pools need 0 <= min_nodes <= max_nodes: ${join(", ", [for p in var.gpu_pools : p.name if !(p.min_nodes >= 0 && p.min_nodes <= p.max_nodes)])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : !p.queued_provisioning || p.reservation == "NO_RESERVATION"])
    error_message = "queued_provisioning needs reservation = \"NO_RESERVATION\": ${join(", ", [for p in var.gpu_pools : p.name if p.queued_provisioning && p.reservation != "NO_RESERVATION"])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : !p.queued_provisioning || p.min_nodes == 0])
    error_message = "queued_provisioning needs min_nodes = 0: ${join(", ", [for p in var.gpu_pools : p.name if p.queued_provisioning && p.min_nodes != 0])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : !(p.queued_provisioning && p.spot)])
    error_message = "queued_provisioning excludes spot: ${join(", ", [for p in var.gpu_pools : p.name if p.queued_provisioning && p.spot])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : !p.spot || p.reservation == "NO_RESERVATION"])
    error_message = "spot needs reservation = \"NO_RESERVATION\": ${join(", ", [for p in var.gpu_pools : p.name if p.spot && p.reservation != "NO_RESERVATION"])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : !(p.flex_start && p.spot) && (!p.flex_start || p.reservation == "NO_RESERVATION")])
    error_message = "flex_start needs reservation = \"NO_RESERVATION\" and excludes spot: ${join(", ", [for p in var.gpu_pools : p.name if p.flex_start && (p.spot || p.reservation != "NO_RESERVATION")])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : contains(["NONE", "COMPACT"], p.placement_policy)])
    error_message = "placement_policy must be NONE or COMPACT: ${join(", ", [for p in var.gpu_pools : p.name if !contains(["NONE", "COMPACT"], p.placement_policy)])}."
  }
  validation {
    # Compute Engine compact placement policies exist only for these machine series
    # (GKE: "compact placement"; N1, E2 and G4, among others, are refused at apply time).
    condition     = alltrue([for p in var.gpu_pools : p.placement_policy != "COMPACT" || contains(local.compact_placement_families, split("-", p.machine_type)[0])])
    error_message = "COMPACT placement is supported only on machine series ${join(", ", local.compact_placement_families)}: ${join(", ", [for p in var.gpu_pools : "${p.name} (${p.machine_type})" if p.placement_policy == "COMPACT" && !contains(local.compact_placement_families, split("-", p.machine_type)[0])])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : p.placement_policy != "COMPACT" || try(length(p.zones) == 1, false)])
    error_message = "COMPACT placement needs exactly one zone in zones: ${join(", ", [for p in var.gpu_pools : p.name if p.placement_policy == "COMPACT" && !try(length(p.zones) == 1, false)])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : !(p.queued_provisioning && p.placement_policy == "COMPACT")])
    error_message = "queued_provisioning cannot use COMPACT placement: ${join(", ", [for p in var.gpu_pools : p.name if p.queued_provisioning && p.placement_policy == "COMPACT"])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : contains(["NO_RESERVATION", "ANY_RESERVATION", "SPECIFIC_RESERVATION"], p.reservation)])
    error_message = "reservation must be NO_RESERVATION, ANY_RESERVATION or SPECIFIC_RESERVATION: ${join(", ", [for p in var.gpu_pools : p.name if !contains(["NO_RESERVATION", "ANY_RESERVATION", "SPECIFIC_RESERVATION"], p.reservation)])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : (p.reservation == "SPECIFIC_RESERVATION") == (p.reservation_name != null)])
    error_message = "set reservation_name exactly when reservation = \"SPECIFIC_RESERVATION\": ${join(", ", [for p in var.gpu_pools : p.name if(p.reservation == "SPECIFIC_RESERVATION") != (p.reservation_name != null)])}."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : p.zones == null || alltrue([for z in coalesce(p.zones, []) : startswith(z, "${var.region}-")])])
    error_message = "gpu_pools zones must be zones of region ${var.region}: ${join(", ", [for p in var.gpu_pools : p.name if !(p.zones == null || alltrue([for z in coalesce(p.zones, []) : startswith(z, "${var.region}-")]))])}."
  }
}

# ---------------------------------------------------- storage and registry ----

variable "bucket_prefix" {
  description = "Prefix of the bucket names (<prefix>-data, -models, -checkpoints); null uses <project_id>-<name>. Bucket names are global."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_prefix == null || can(regex("^[a-z0-9][-a-z0-9]{1,49}$", coalesce(var.bucket_prefix, "x")))
    error_message = "bucket_prefix must be 2-50 lowercase letters, digits or hyphens."
  }
  validation {
    # The longest bucket is <prefix>-watcher-state; bucket names have at most 63 characters.
    condition     = length(coalesce(var.bucket_prefix, "${var.project_id}-${var.name}")) <= 49
    error_message = "bucket names would exceed 63 characters (${coalesce(var.bucket_prefix, "${var.project_id}-${var.name}")}-watcher-state): set bucket_prefix to at most 49 characters."
  }
}

variable "checkpoint_retention_days" {
  description = "Delete checkpoints this many days after they were written."
  type        = number
  default     = 30

  validation {
    condition     = var.checkpoint_retention_days >= 1
    error_message = "checkpoint_retention_days must be >= 1."
  }
}

variable "model_noncurrent_version_days" {
  description = "Delete overwritten (noncurrent) model object versions after this many days; 0 keeps them forever."
  type        = number
  default     = 90
}

variable "kms_key_name" {
  description = "Optional CMEK (projects/P/locations/REGION/keyRings/R/cryptoKeys/K) for the buckets, the registry and the Pub/Sub topics. The services' agents are granted use of it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", coalesce(var.kms_key_name, "x")))
    error_message = "kms_key_name must look like projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete the buckets with their objects (`make destroy` sets it after asking)."
  type        = bool
  default     = false
}

variable "registry_id" {
  description = "Artifact Registry repository id; null uses <name>-images."
  type        = string
  default     = null
}

# ---------------------------------------------------------- notifications ----

variable "data_notification_prefix" {
  description = "Only objects under this prefix of the data bucket trigger retraining notifications (\"\" for all). Ends with \"/\": the watcher chart's gcp.dataPrefix is a folder."
  type        = string
  default     = "incoming/"

  validation {
    condition     = var.data_notification_prefix == "" || (endswith(var.data_notification_prefix, "/") && !startswith(var.data_notification_prefix, "/") && !strcontains(var.data_notification_prefix, "//"))
    error_message = "data_notification_prefix must be \"\" or a folder ending with \"/\" (no leading \"/\", no empty segment), e.g. \"incoming/\"."
  }
}

variable "watcher_ack_deadline_seconds" {
  description = "Ack deadline of the watcher's subscription."
  type        = number
  default     = 60

  validation {
    condition     = var.watcher_ack_deadline_seconds >= 10 && var.watcher_ack_deadline_seconds <= 600
    error_message = "watcher_ack_deadline_seconds must be between 10 and 600."
  }
}

variable "watcher_max_delivery_attempts" {
  description = "Deliveries before a message goes to the dead-letter topic (CONTRACTS.md: 10; docs/terraform.md has the outage arithmetic)."
  type        = number
  default     = 10

  validation {
    condition     = var.watcher_max_delivery_attempts >= 5 && var.watcher_max_delivery_attempts <= 100
    error_message = "watcher_max_delivery_attempts must be between 5 and 100 (a Pub/Sub limit)."
  }
}

# ------------------------------------------------------------- identities ----

variable "k8s_namespace" {
  description = "Kubernetes namespace of the training pods and the watcher."
  type        = string
  default     = "training"
}

variable "trainer_ksa" {
  description = "Kubernetes service account of the training pods."
  type        = string
  default     = "jobgen-trainer"
}

variable "watcher_ksa" {
  description = "Kubernetes service account of the retraining watcher."
  type        = string
  default     = "retrain-watcher"
}

variable "watcher_image" {
  description = "Image of the watcher for the generated Helm values (repository without tag); null uses <registry>/watcher."
  type        = string
  default     = null
}

variable "watcher_image_tag" {
  description = "Tag of the watcher image for the generated Helm values (make images tags with the git sha)."
  type        = string
  default     = "latest"
}

variable "image_pushers" {
  description = "Principals that may push images to the registry (roles/artifactregistry.writer on the repository only), e.g. \"serviceAccount:123-compute@developer.gserviceaccount.com\" for Cloud Build's default service account or a CI service account."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.image_pushers : can(regex("^(serviceAccount|user|group|principal|principalSet):", m))])
    error_message = "image_pushers entries must be IAM principals such as serviceAccount:EMAIL or group:EMAIL."
  }
  validation {
    condition     = !anytrue([for m in var.image_pushers : strcontains(m, "allUsers") || strcontains(m, "allAuthenticatedUsers")])
    error_message = "image_pushers must not be public."
  }
}

# ------------------------------------------------------ added for issue 13 ----

variable "enable_image_streaming" {
  description = "Image streaming (GCFS) on every node pool. Brings its prerequisites: containerfilesystem.googleapis.com and roles/serviceusage.serviceUsageConsumer for the node service account."
  type        = bool
  default     = true
}

variable "webhook_ports" {
  description = "TCP ports on the nodes the private control plane may reach (admission webhooks: training-operator and Kueue serve on 9443). GKE's own rule admits only 443 and 10250."
  type        = list(number)
  default     = [9443]

  validation {
    condition     = length(var.webhook_ports) > 0 && alltrue([for p in var.webhook_ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "webhook_ports must be a non-empty list of TCP ports (1-65535); the training-operator's webhook needs 9443."
  }
}

variable "flow_logs" {
  description = "VPC flow logs of the nodes' subnet: sampling (0-1], aggregation interval and metadata. Lower sampling and a longer interval cost less (examples/cheap.tfvars)."
  type = object({
    sampling = optional(number, 0.5)
    interval = optional(string, "INTERVAL_5_MIN")
    metadata = optional(string, "INCLUDE_ALL_METADATA")
  })
  default = {}

  validation {
    condition     = var.flow_logs.sampling > 0 && var.flow_logs.sampling <= 1
    error_message = "flow_logs.sampling must be in (0, 1]."
  }
  validation {
    condition     = contains(["INTERVAL_5_SEC", "INTERVAL_30_SEC", "INTERVAL_1_MIN", "INTERVAL_5_MIN", "INTERVAL_10_MIN", "INTERVAL_15_MIN"], var.flow_logs.interval)
    error_message = "flow_logs.interval must be one of INTERVAL_5_SEC, INTERVAL_30_SEC, INTERVAL_1_MIN, INTERVAL_5_MIN, INTERVAL_10_MIN, INTERVAL_15_MIN."
  }
  validation {
    condition     = contains(["INCLUDE_ALL_METADATA", "EXCLUDE_ALL_METADATA"], var.flow_logs.metadata)
    error_message = "flow_logs.metadata must be INCLUDE_ALL_METADATA or EXCLUDE_ALL_METADATA."
  }
}

variable "watcher_state_retention_days" {
  description = "The watcher's durable state (claims of (trigger, data key)) in <bucket_prefix>-watcher-state is deleted after this many days; the watcher ignores events older than this."
  type        = number
  default     = 30

  validation {
    condition     = var.watcher_state_retention_days >= 1
    error_message = "watcher_state_retention_days must be >= 1."
  }
}

variable "retrain_model_name" {
  description = "Model name of the watcher's job in the generated Helm values: it writes to gs://<models bucket>/<retrain_model_name>."
  type        = string
  default     = "retrain"

  validation {
    condition     = can(regex("^[a-z0-9][-_a-z0-9]{0,62}$", var.retrain_model_name))
    error_message = "retrain_model_name must be 1-63 lowercase letters, digits, '-' or '_'."
  }
}

variable "adopt_existing_buckets" {
  description = "Buckets (data, models, checkpoints, watcher-state) that exist already, e.g. kept by `make destroy KEEP_BUCKETS=1`: imported into the state instead of created (409). `make cluster` fills this in itself."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for b in var.adopt_existing_buckets : contains(["data", "models", "checkpoints", "watcher-state", "build"], b)])
    error_message = "adopt_existing_buckets entries must be data, models, checkpoints, watcher-state or build."
  }
}

variable "registry_keep_recent" {
  description = "Artifact Registry cleanup: the most recent versions of each image kept whatever their age or tags."
  type        = number
  default     = 20

  validation {
    condition     = var.registry_keep_recent >= 1
    error_message = "registry_keep_recent must be >= 1."
  }
}

variable "registry_delete_after_days" {
  description = "Artifact Registry cleanup: tagged and untagged versions older than this are deleted, except the registry_keep_recent newest of each image."
  type        = number
  default     = 30

  validation {
    condition     = var.registry_delete_after_days >= 1
    error_message = "registry_delete_after_days must be >= 1."
  }
}

variable "enable_cloud_build" {
  description = "Create what `make images` needs for Cloud Build: a build service account (logs, registry writer), a source staging bucket, and enable cloudbuild.googleapis.com. Projects created since mid-2024 give the default build service account no roles."
  type        = bool
  default     = true
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose workflows may deploy (Workload Identity Federation, no keys); null creates no pool."
  type        = string
  default     = null

  validation {
    condition     = var.github_repository == null || can(regex("^[A-Za-z0-9][-A-Za-z0-9]{0,38}/[A-Za-z0-9._-]{1,100}$", coalesce(var.github_repository, "x")))
    error_message = "github_repository must be owner/name, e.g. acme/jobgen."
  }
}

variable "github_deploy_branch" {
  description = "The only branch whose workflow runs may impersonate the deploy service account (push images, helm upgrade)."
  type        = string
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.github_deploy_branch)) && !startswith(var.github_deploy_branch, "refs/")
    error_message = "github_deploy_branch must be a branch name such as main (without refs/heads/)."
  }
}

variable "github_plan_state_bucket" {
  description = "Optional bucket holding the Terraform state (backend \"gcs\"); the CI plan identity gets objectAdmin on it (plan takes the state lock)."
  type        = string
  default     = null
}

variable "enable_alert_policies" {
  description = "Cloud Monitoring alert policies (dead-lettered messages, watcher not ready, idle GPU nodes); need enable_managed_prometheus."
  type        = bool
  default     = true

  validation {
    condition     = !var.enable_alert_policies || var.enable_managed_prometheus
    error_message = "enable_alert_policies needs enable_managed_prometheus = true (the alerts query the watcher's Prometheus metrics)."
  }
}

variable "alert_notification_channels" {
  description = "Notification channel ids (projects/P/notificationChannels/N) the alert policies notify."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "alert_notification_channels entries must be projects/P/notificationChannels/N."
  }
}

variable "gpu_idle_alert_minutes" {
  description = "Alert when GPU nodes run this long with no running pod requesting GPUs (idle cost)."
  type        = number
  default     = 30

  validation {
    condition     = var.gpu_idle_alert_minutes >= 5
    error_message = "gpu_idle_alert_minutes must be >= 5."
  }
}

variable "enable_dns_endpoint" {
  description = "Allow traffic on the control plane's DNS-based endpoint (IAM-authenticated, no authorized networks): needed by the deploy workflow on GitHub-hosted runners, whose addresses are not in master_authorized_networks."
  type        = bool
  default     = false
}
