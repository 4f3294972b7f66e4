Feature: Host rules
  Hosts match case-insensitively without the port; a wildcard covers exactly one label;
  an exact host beats a wildcard; a rule with no host matches every other host; one
  Ingress may name many hosts and many Ingresses may share a host.

  Background:
    Given a new random namespace
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: hosts
    spec:
      rules:
        - host: foo.bar.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: foo-bar-com, port: {number: 8080}}}}
        - host: "*.bar.com"
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: wildcard-bar-com, port: {number: 8080}}}}
        - host: one.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: one, port: {number: 8080}}}}
        - host: two.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: two, port: {number: 8080}}}}
        - host: shared.example.com
          http:
            paths:
              - {path: /a, pathType: Prefix, backend: {service: {name: shared-a, port: {number: 8080}}}}
        - http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: any-host, port: {number: 8080}}}}
    """
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: hosts-more
    spec:
      rules:
        - host: shared.example.com
          http:
            paths:
              - {path: /b, pathType: Prefix, backend: {service: {name: shared-b, port: {number: 8080}}}}
    """
    Then The Ingress status shows the IP address or FQDN where it is exposed

  Scenario Outline: A request goes to the rule of its host
    When I send a "GET" request to "http://<host><path>"
    Then the request must be answered by "<backend>"
    And the request host must be "<host>"

    Examples:
      | host                   | path | backend          |
      | foo.bar.com            | /    | foo-bar-com      |
      | FOO.Bar.COM            | /    | foo-bar-com      |
      | foo.bar.com:8080       | /    | foo-bar-com      |
      | baz.bar.com            | /    | wildcard-bar-com |
      | a.baz.bar.com          | /    | any-host         |
      | bar.com                | /    | any-host         |
      | one.example.com        | /    | one              |
      | two.example.com        | /x   | two              |
      | shared.example.com     | /a/1 | shared-a         |
      | shared.example.com     | /b/2 | shared-b         |
      | shared.example.com     | /c   | any-host         |
      | unknown.example.org    | /    | any-host         |
