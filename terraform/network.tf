# A dedicated VPC: private nodes reach the internet (image pulls from outside
# Google, pip) through Cloud NAT and Google APIs through Private Google Access.
resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "nodes" {
  project                  = var.project_id
  name                     = "${var.name}-nodes"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr
  }

  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr
  }

  log_config {
    aggregation_interval = var.flow_logs.interval
    flow_sampling        = var.flow_logs.sampling
    metadata             = var.flow_logs.metadata
  }
}

resource "google_compute_router" "this" {
  project = var.project_id
  name    = "${var.name}-router"
  region  = var.region
  network = google_compute_network.this.id
}

resource "google_compute_router_nat" "this" {
  project                            = var.project_id
  name                               = "${var.name}-nat"
  router                             = google_compute_router.this.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.nodes.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# GKE adds the allow rules it needs (priority 1000); everything else that
# comes in is denied, and logged, explicitly.
resource "google_compute_firewall" "deny_ingress" {
  project   = var.project_id
  name      = "${var.name}-deny-ingress"
  network   = google_compute_network.this.id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }

  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# The private control plane calls admission webhooks on the nodes: the
# training-operator's (and Kueue's) on 9443. GKE's own firewall rule for
# private clusters admits the control plane on 443 and 10250 only, and the
# webhooks use failurePolicy: Fail, so without this rule every PyTorchJob and
# TFJob create fails with "failed calling webhook ... context deadline exceeded"
# (kubernetes/kubernetes#79739).
resource "google_compute_firewall" "master_webhooks" {
  count = google_container_cluster.this.private_cluster_config[0].enable_private_nodes ? 1 : 0

  project       = var.project_id
  name          = "${var.name}-master-webhooks"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  priority      = 1000
  description   = "GKE control plane -> admission webhooks on the nodes (training-operator, Kueue)."
  source_ranges = [var.master_ipv4_cidr_block]

  target_service_accounts = [google_service_account.nodes.email]

  allow {
    protocol = "tcp"
    ports    = [for p in var.webhook_ports : tostring(p)]
  }

  log_config {
    metadata = "EXCLUDE_ALL_METADATA"
  }
}
