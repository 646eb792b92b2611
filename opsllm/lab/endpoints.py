"""What each user task of the load generator makes the system do: the RPC tree behind every request.

The trees follow the upstream handlers (frontend ``handlers.go``, checkoutservice ``PlaceOrder``,
recommendationservice, cartservice's ``RedisCartStore``): calls are made one after another, and a
failed call ends the handler unless the upstream code treats it as optional (ads, the confirmation
e-mail). The task mix is the upstream ``locustfile.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Op:
    """Cost of one operation on its server."""

    self_ms: float      # median server-side time excluding calls, unloaded
    cpu_ms: float       # CPU time per call
    req_bytes: int
    resp_bytes: int
    write: bool = False  # redis: a write, which needs the AOF


OPS: dict[tuple[str, str], Op] = {
    ("frontend", "GET /"): Op(6.0, 5.0, 600, 18000),
    ("frontend", "POST /setCurrency"): Op(0.8, 0.5, 700, 300),
    ("frontend", "GET /product/{id}"): Op(5.0, 4.5, 600, 14000),
    ("frontend", "POST /cart"): Op(1.5, 1.0, 800, 300),
    ("frontend", "GET /cart"): Op(5.0, 4.0, 600, 12000),
    ("frontend", "POST /cart/checkout"): Op(6.0, 5.0, 1200, 11000),
    ("currencyservice", "hipstershop.CurrencyService/GetSupportedCurrencies"): Op(0.6, 0.5, 40, 300),
    ("currencyservice", "hipstershop.CurrencyService/Convert"): Op(0.4, 0.4, 80, 60),
    ("productcatalogservice", "hipstershop.ProductCatalogService/ListProducts"): Op(0.8, 0.6, 20, 5200),
    ("productcatalogservice", "hipstershop.ProductCatalogService/GetProduct"): Op(0.4, 0.3, 40, 600),
    ("cartservice", "hipstershop.CartService/GetCart"): Op(1.4, 1.2, 60, 200),
    ("cartservice", "hipstershop.CartService/AddItem"): Op(1.8, 1.5, 90, 20),
    ("cartservice", "hipstershop.CartService/EmptyCart"): Op(1.4, 1.2, 60, 20),
    ("redis-cart", "HGET"): Op(0.12, 0.05, 60, 200),
    ("redis-cart", "HSET"): Op(0.15, 0.06, 260, 20, write=True),
    ("redis-cart", "EXPIRE"): Op(0.10, 0.04, 60, 20, write=True),
    ("recommendationservice", "hipstershop.RecommendationService/ListRecommendations"): Op(2.5, 2.5, 120, 200),
    ("shippingservice", "hipstershop.ShippingService/GetQuote"): Op(0.4, 0.3, 200, 60),
    ("shippingservice", "hipstershop.ShippingService/ShipOrder"): Op(0.5, 0.4, 300, 60),
    ("paymentservice", "hipstershop.PaymentService/Charge"): Op(1.2, 1.2, 200, 80),
    ("emailservice", "hipstershop.EmailService/SendOrderConfirmation"): Op(6.0, 6.0, 900, 20),
    ("checkoutservice", "hipstershop.CheckoutService/PlaceOrder"): Op(2.0, 1.8, 500, 700),
    ("adservice", "hipstershop.AdService/GetAds"): Op(1.0, 1.2, 80, 400),
}


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    children: tuple[Call, ...] = ()
    fatal: bool = True   # does a failure of this call fail the caller?
    repeat: int = 1


def _rpc(service: str, method: str, *children: Call, fatal: bool = True, repeat: int = 1) -> Call:
    prefix = {"currencyservice": "CurrencyService", "productcatalogservice": "ProductCatalogService",
              "cartservice": "CartService", "recommendationservice": "RecommendationService",
              "shippingservice": "ShippingService", "paymentservice": "PaymentService",
              "emailservice": "EmailService", "checkoutservice": "CheckoutService",
              "adservice": "AdService"}[service]
    return Call(service, f"hipstershop.{prefix}/{method}", tuple(children), fatal, repeat)


_REDIS_READ = Call("redis-cart", "HGET")
_REDIS_WRITE = (Call("redis-cart", "HGET"), Call("redis-cart", "HSET"), Call("redis-cart", "EXPIRE"))
_REDIS_EMPTY = (Call("redis-cart", "HSET"), Call("redis-cart", "EXPIRE"))
_CURRENCIES = _rpc("currencyservice", "GetSupportedCurrencies")
_GET_CART = _rpc("cartservice", "GetCart", _REDIS_READ)
_RECS = _rpc("recommendationservice", "ListRecommendations", _rpc("productcatalogservice", "ListProducts"))
_ADS = _rpc("adservice", "GetAds", fatal=False)
CART_ITEMS = 2

ROUTES: dict[str, Call] = {
    "index": Call("frontend", "GET /", (
        _CURRENCIES, _rpc("productcatalogservice", "ListProducts"), _GET_CART,
        _rpc("currencyservice", "Convert", repeat=9), _ADS)),
    "setCurrency": Call("frontend", "POST /setCurrency"),
    "browseProduct": Call("frontend", "GET /product/{id}", (
        _rpc("productcatalogservice", "GetProduct"), _CURRENCIES, _GET_CART,
        _rpc("currencyservice", "Convert"), _RECS, _ADS)),
    "addToCart": Call("frontend", "POST /cart", (
        _rpc("productcatalogservice", "GetProduct"), _rpc("cartservice", "AddItem", *_REDIS_WRITE))),
    "viewCart": Call("frontend", "GET /cart", (
        _CURRENCIES, _GET_CART, _RECS, _rpc("shippingservice", "GetQuote"),
        _rpc("productcatalogservice", "GetProduct", repeat=CART_ITEMS),
        _rpc("currencyservice", "Convert", repeat=CART_ITEMS + 1))),
    "checkout": Call("frontend", "POST /cart/checkout", (
        _rpc("checkoutservice", "PlaceOrder",
             _GET_CART,
             _rpc("productcatalogservice", "GetProduct", repeat=CART_ITEMS),
             _rpc("currencyservice", "Convert", repeat=CART_ITEMS),
             _rpc("shippingservice", "GetQuote"),
             _rpc("currencyservice", "Convert"),
             _rpc("paymentservice", "Charge"),
             _rpc("shippingservice", "ShipOrder"),
             # PlaceOrder ignores the error of emptying the cart (`_ = cs.emptyUserCart(...)`)
             _rpc("cartservice", "EmptyCart", *_REDIS_EMPTY, fatal=False),
             _rpc("emailservice", "SendOrderConfirmation", fatal=False)),
        _RECS, _CURRENCIES)),
}


@dataclass(frozen=True)
class Task:
    name: str
    weight: int
    routes: tuple[str, ...] = field(default=())


# locustfile.py: index 1, setCurrency 2, browseProduct 10, addToCart 2, viewCart 3, checkout 1;
# checkout adds an item first, setCurrency redirects to the index.
TASKS: tuple[Task, ...] = (
    Task("index", 1, ("index",)),
    Task("setCurrency", 2, ("setCurrency", "index")),
    Task("browseProduct", 10, ("browseProduct",)),
    Task("addToCart", 2, ("addToCart",)),
    Task("viewCart", 3, ("viewCart",)),
    Task("checkout", 1, ("addToCart", "checkout")),
)


def calls_per_route(route: str) -> dict[str, float]:
    """Expected server calls per service for one request of a route (for the analytic load)."""
    out: dict[str, float] = {}

    def walk(call: Call, times: float) -> None:
        out[call.service] = out.get(call.service, 0.0) + times * call.repeat
        for child in call.children:
            walk(child, times * call.repeat)

    walk(ROUTES[route], 1.0)
    return out
