(()=>{var nt,g,Ut,we,E,Pt,Lt,Ot,ft,Y,K,Ft,$t,mt,ht,xe,X={},tt=[],Te=/acit|ex(?:s|g|n|p|$)|rph|grid|ows|mnc|ntw|ine[ch]|zoo|^ord|itera/i,ot=Array.isArray;function I(t,e){for(var n in e)t[n]=e[n];return t}function bt(t){t&&t.parentNode&&t.parentNode.removeChild(t)}function st(t,e,n){var s,r,o,i={};for(o in e)o=="key"?s=e[o]:o=="ref"?r=e[o]:i[o]=e[o];if(arguments.length>2&&(i.children=arguments.length>3?nt.call(arguments,2):n),typeof t=="function"&&t.defaultProps!=null)for(o in t.defaultProps)i[o]===void 0&&(i[o]=t.defaultProps[o]);return Q(t,i,s,r,null)}function Q(t,e,n,s,r){var o={type:t,props:e,key:n,ref:s,__k:null,__:null,__b:0,__e:null,__c:null,constructor:void 0,__v:r??++Ut,__i:-1,__u:0};return r==null&&g.vnode!=null&&g.vnode(o),o}function rt(t){return t.children}function q(t,e){this.props=t,this.context=e}function L(t,e){if(e==null)return t.__?L(t.__,t.__i+1):null;for(var n;e<t.__k.length;e++)if((n=t.__k[e])!=null&&n.__e!=null)return n.__e;return typeof t.type=="function"?L(t):null}function Ce(t){if(t.__P&&t.__d){var e=t.__v,n=e.__e,s=[],r=[],o=I({},e);o.__v=e.__v+1,g.vnode&&g.vnode(o),gt(t.__P,o,e,t.__n,t.__P.namespaceURI,32&e.__u?[n]:null,s,n??L(e),!!(32&e.__u),r),o.__v=e.__v,o.__.__k[o.__i]=o,Kt(s,o,r),e.__e=e.__=null,o.__e!=n&&Ht(o)}}function Ht(t){if((t=t.__)!=null&&t.__c!=null)return t.__e=t.__c.base=null,t.__k.some(function(e){if(e!=null&&e.__e!=null)return t.__e=t.__c.base=e.__e}),Ht(t)}function Nt(t){(!t.__d&&(t.__d=!0)&&E.push(t)&&!et.__r++||Pt!=g.debounceRendering)&&((Pt=g.debounceRendering)||Lt)(et)}function et(){try{for(var t,e=1;E.length;)E.length>e&&E.sort(Ot),t=E.shift(),e=E.length,Ce(t)}finally{E.length=et.__r=0}}function Bt(t,e,n,s,r,o,i,l,p,c,d){var f,a,_,$,k,b,S=s&&s.__k||tt,m=e.length;for(p=Me(n,e,S,p,m),f=0;f<m;f++)(_=n.__k[f])!=null&&(a=_.__i!=-1&&S[_.__i]||X,_.__i=f,b=gt(t,_,a,r,o,i,l,p,c,d),$=_.__e,_.ref&&a.ref!=_.ref&&(a.ref&&yt(a.ref,null,_),d.push(_.ref,_.__c||$,_)),k==null&&$!=null&&(k=$),4&_.__u?(p=zt(_,p,t),a.__e&&(a.__e=null)):typeof _.type=="function"&&b!==void 0?p=b:$&&(p=$.nextSibling),_.__u&=-7);return n.__e=k,p}function Me(t,e,n,s,r){var o,i,l,p,c,d=n.length,f=d,a=0;for(t.__k=new Array(r),o=0;o<r;o++)(i=e[o])!=null&&typeof i!="boolean"&&typeof i!="function"?(typeof i=="string"||typeof i=="number"||typeof i=="bigint"||i.constructor==String?i=t.__k[o]=Q(null,i,null,null,null):ot(i)?i=t.__k[o]=Q(rt,{children:i},null,null,null):i.constructor===void 0&&i.__b>0?i=t.__k[o]=Q(i.type,i.props,i.key,i.ref?i.ref:null,i.__v):t.__k[o]=i,p=o+a,i.__=t,i.__b=t.__b+1,l=null,(c=i.__i=je(i,n,p,f))!=-1&&(f--,(l=n[c])&&(l.__u|=2)),l==null||l.__v==null?(c==-1&&(r>d?a--:r<d&&a++),typeof i.type!="function"&&(i.__u|=4)):c!=p&&(c==p-1?a--:c==p+1?a++:(c>p?a--:a++,i.__u|=4))):t.__k[o]=null;if(f)for(o=0;o<d;o++)(l=n[o])!=null&&(2&l.__u)==0&&(l.__e==s&&(s=L(l)),Wt(l,l));return s}function zt(t,e,n){var s,r;if(typeof t.type=="function"){for(s=t.__k,r=0;s&&r<s.length;r++)s[r]&&(s[r].__=t,e=zt(s[r],e,n));return e}t.__e!=e&&(e&&t.type&&!e.parentNode&&(e=L(t)),e=n.insertBefore(t.__e,e||null));do e=e&&e.nextSibling;while(e!=null&&e.nodeType==8);return e}function je(t,e,n,s){var r,o,i,l=t.key,p=t.type,c=e[n],d=c!=null&&(2&c.__u)==0;if(c===null&&l==null||d&&l==c.key&&p==c.type)return n;if(s>(d?1:0)){for(r=n-1,o=n+1;r>=0||o<e.length;)if((c=e[i=r>=0?r--:o++])!=null&&(2&c.__u)==0&&l==c.key&&p==c.type)return i}return-1}function Rt(t,e,n){e[0]=="-"?t.setProperty(e,n??""):t[e]=n==null?"":typeof n!="number"||Te.test(e)?n:n+"px"}function Z(t,e,n,s,r){var o,i;t:if(e=="style")if(typeof n=="string")t.style.cssText=n;else{if(typeof s=="string"&&(t.style.cssText=s=""),s)for(e in s)n&&e in n||Rt(t.style,e,"");if(n)for(e in n)s&&n[e]==s[e]||Rt(t.style,e,n[e])}else if(e[0]=="o"&&e[1]=="n")o=e!=(e=e.replace(Ft,"$1")),i=e.toLowerCase(),e=i in t||e=="onFocusOut"||e=="onFocusIn"?i.slice(2):e.slice(2),t.l||(t.l={}),t.l[e+o]=n,n?s?n[K]=s[K]:(n[K]=$t,t.addEventListener(e,o?ht:mt,o)):t.removeEventListener(e,o?ht:mt,o);else{if(r=="http://www.w3.org/2000/svg")e=e.replace(/xlink(H|:h)/,"h").replace(/sName$/,"s");else if(e!="width"&&e!="height"&&e!="href"&&e!="list"&&e!="form"&&e!="tabIndex"&&e!="download"&&e!="rowSpan"&&e!="colSpan"&&e!="role"&&e!="popover"&&e in t)try{t[e]=n??"";break t}catch{}typeof n=="function"||(n==null||n===!1&&e[4]!="-"?t.removeAttribute(e):t.setAttribute(e,e=="popover"&&n==1?"":n))}}function Dt(t){return function(e){if(this.l){var n=this.l[e.type+t];if(e[Y]==null)e[Y]=$t++;else if(e[Y]<n[K])return;return n(g.event?g.event(e):e)}}}function gt(t,e,n,s,r,o,i,l,p,c){var d,f,a,_,$,k,b,S,m,M,z,U,J,Et,V,_t,j=e.type;if(e.constructor!==void 0)return null;128&n.__u&&(p=!!(32&n.__u),o=[l=e.__e=n.__e]),(d=g.__b)&&d(e);t:if(typeof j=="function"){f=i.length;try{if(m=e.props,M=j.prototype&&j.prototype.render,z=(d=j.contextType)&&s[d.__c],U=d?z?z.props.value:d.__:s,n.__c?S=(a=e.__c=n.__c).__=a.__E:(M?e.__c=a=new j(m,U):(e.__c=a=new q(m,U),a.constructor=j,a.render=Ie),z&&z.sub(a),a.state||(a.state={}),a.__n=s,_=a.__d=!0,a.__h=[],a._sb=[]),M&&a.__s==null&&(a.__s=a.state),M&&j.getDerivedStateFromProps!=null&&(a.__s==a.state&&(a.__s=I({},a.__s)),I(a.__s,j.getDerivedStateFromProps(m,a.__s))),$=a.props,k=a.state,a.__v=e,_)M&&j.getDerivedStateFromProps==null&&a.componentWillMount!=null&&a.componentWillMount(),M&&a.componentDidMount!=null&&a.__h.push(a.componentDidMount);else{if(M&&j.getDerivedStateFromProps==null&&m!==$&&a.componentWillReceiveProps!=null&&a.componentWillReceiveProps(m,U),e.__v==n.__v||!a.__e&&a.shouldComponentUpdate!=null&&a.shouldComponentUpdate(m,a.__s,U)===!1){e.__v!=n.__v&&(a.props=m,a.state=a.__s,a.__d=!1),e.__e=n.__e,e.__k=n.__k,e.__k.some(function(H){H&&(H.__=e)}),tt.push.apply(a.__h,a._sb),a._sb=[],a.__h.length&&i.push(a),l=L(n);break t}a.componentWillUpdate!=null&&a.componentWillUpdate(m,a.__s,U),M&&a.componentDidUpdate!=null&&a.__h.push(function(){a.componentDidUpdate($,k,b)})}if(a.context=U,a.props=m,a.__P=t,a.__e=!1,J=g.__r,Et=0,M)a.state=a.__s,a.__d=!1,J&&J(e),d=a.render(a.props,a.state,a.context),tt.push.apply(a.__h,a._sb),a._sb=[];else do a.__d=!1,J&&J(e),d=a.render(a.props,a.state,a.context),a.state=a.__s;while(a.__d&&++Et<25);a.state=a.__s,a.getChildContext!=null&&(s=I(I({},s),a.getChildContext())),M&&!_&&a.getSnapshotBeforeUpdate!=null&&(b=a.getSnapshotBeforeUpdate($,k)),V=d!=null&&d.type===rt&&d.key==null?qt(d.props.children):d,l=Bt(t,ot(V)?V:[V],e,n,s,r,o,i,l,p,c),a.base=e.__e,e.__u&=-161,a.__h.length&&i.push(a),S&&(a.__E=a.__=null)}catch(H){if(i.length=f,e.__v=null,p||o!=null){if(H.then){for(e.__u|=p?160:128;l&&l.nodeType==8&&l.nextSibling;)l=l.nextSibling;o!=null&&(o[o.indexOf(l)]=null),e.__e=l}else if(o!=null)for(_t=o.length;_t--;)bt(o[_t])}else e.__e=n.__e;e.__k==null&&(e.__k=n.__k||[]),H.then||Jt(e),g.__e(H,e,n)}}else o==null&&e.__v==n.__v?(e.__k=n.__k,e.__e=n.__e):l=e.__e=Ae(n.__e,e,n,s,r,o,i,p,c);return(d=g.diffed)&&d(e),128&e.__u?void 0:l}function Jt(t){t&&(t.__c&&(t.__c.__e=!0),t.__k&&t.__k.some(Jt))}function Kt(t,e,n){for(var s=0;s<n.length;s++)yt(n[s],n[++s],n[++s]);g.__c&&g.__c(e,t),t.some(function(r){try{t=r.__h,r.__h=[],t.some(function(o){o.call(r)})}catch(o){g.__e(o,r.__v)}})}function qt(t){return typeof t!="object"||t==null||t.__b>0?t:ot(t)?t.map(qt):t.constructor!==void 0?null:I({},t)}function Ae(t,e,n,s,r,o,i,l,p){var c,d,f,a,_,$,k,b=n.props||X,S=e.props,m=e.type;if(m=="svg"?r="http://www.w3.org/2000/svg":m=="math"?r="http://www.w3.org/1998/Math/MathML":r||(r="http://www.w3.org/1999/xhtml"),o!=null){for(c=0;c<o.length;c++)if((_=o[c])&&"setAttribute"in _==!!m&&(m?_.localName==m:_.nodeType==3)){t=_,o[c]=null;break}}if(t==null){if(m==null)return document.createTextNode(S);t=document.createElementNS(r,m,S.is&&S),l&&(g.__m&&g.__m(e,o),l=!1),o=null}if(m==null)b===S||l&&t.data==S||(t.data=S);else{if(o=m=="textarea"&&S.defaultValue!=null?null:o&&nt.call(t.childNodes),!l&&o!=null)for(b={},c=0;c<t.attributes.length;c++)b[(_=t.attributes[c]).name]=_.value;for(c in b)_=b[c],c=="dangerouslySetInnerHTML"?f=_:c=="children"||c in S||c=="value"&&"defaultValue"in S||c=="checked"&&"defaultChecked"in S||Z(t,c,null,_,r);for(c in S)_=S[c],c=="children"?a=_:c=="dangerouslySetInnerHTML"?d=_:c=="value"?$=_:c=="checked"?k=_:l&&typeof _!="function"||b[c]===_||Z(t,c,_,b[c],r);if(d)l||f&&(d.__html==f.__html||d.__html==t.innerHTML)||(t.innerHTML=d.__html),e.__k=[];else if(f&&(t.innerHTML=""),Bt(e.type=="template"?t.content:t,ot(a)?a:[a],e,n,s,m=="foreignObject"?"http://www.w3.org/1999/xhtml":r,o,i,o?o[0]:n.__k&&L(n,0),l,p),o!=null)for(c=o.length;c--;)bt(o[c]);l&&m!="textarea"||(c="value",m=="progress"&&$==null?t.removeAttribute("value"):$!=null&&($!==t[c]||m=="progress"&&!$||m=="option"&&$!=b[c])&&Z(t,c,$,b[c],r),c="checked",k!=null&&k!=t[c]&&Z(t,c,k,b[c],r))}return t}function yt(t,e,n){try{if(typeof t=="function"){var s=typeof t.__u=="function";s&&t.__u(),s&&e==null||(t.__u=t(e))}else t.current=e}catch(r){g.__e(r,n)}}function Wt(t,e,n){var s,r;if(g.unmount&&g.unmount(t),(s=t.ref)&&(s.current&&s.current!=t.__e||yt(s,null,e)),(s=t.__c)!=null){if(s.componentWillUnmount)try{s.componentWillUnmount()}catch(o){g.__e(o,e)}s.base=s.__P=s.__n=null}if(s=t.__k)for(r=0;r<s.length;r++)s[r]&&Wt(s[r],e,n||typeof t.type!="function");n||bt(t.__e),t.__c=t.__=t.__e=void 0}function Ie(t,e,n){return this.constructor(t,n)}function vt(t,e,n){var s,r,o,i;e==document&&(e=document.documentElement),g.__&&g.__(t,e),r=(s=typeof n=="function")?null:n&&n.__k||e.__k,o=[],i=[],gt(e,t=(!s&&n||e).__k=st(rt,null,[t]),r||X,X,e.namespaceURI,!s&&n?[n]:r?null:e.firstChild?nt.call(e.childNodes):null,o,!s&&n?n:r?r.__e:e.firstChild,s,i),Kt(o,t,i),t.props.children=null}nt=tt.slice,g={__e:function(t,e,n,s){for(var r,o,i;e=e.__;)if((r=e.__c)&&!r.__)try{if((o=r.constructor)&&o.getDerivedStateFromError!=null&&(r.setState(o.getDerivedStateFromError(t)),i=r.__d),r.componentDidCatch!=null&&(r.componentDidCatch(t,s||{}),i=r.__d),i)return r.__E=r}catch(l){t=l}throw t}},Ut=0,we=function(t){return t!=null&&t.constructor===void 0},q.prototype.setState=function(t,e){var n;n=this.__s!=null&&this.__s!=this.state?this.__s:this.__s=I({},this.state),typeof t=="function"&&(t=t(I({},n),this.props)),t&&I(n,t),t!=null&&this.__v&&(e&&this._sb.push(e),Nt(this))},q.prototype.forceUpdate=function(t){this.__v&&(this.__e=!0,t&&this.__h.push(t),Nt(this))},q.prototype.render=rt,E=[],Lt=typeof Promise=="function"?Promise.prototype.then.bind(Promise.resolve()):setTimeout,Ot=function(t,e){return t.__v.__b-e.__v.__b},et.__r=0,ft=Math.random().toString(8),Y="__d"+ft,K="__a"+ft,Ft=/(PointerCapture)$|Capture$/i,$t=0,mt=Dt(!1),ht=Dt(!0),xe=0;var Vt=function(t,e,n,s){var r;e[0]=0;for(var o=1;o<e.length;o++){var i=e[o++],l=e[o]?(e[0]|=i?1:2,n[e[o++]]):e[++o];i===3?s[0]=l:i===4?s[1]=Object.assign(s[1]||{},l):i===5?(s[1]=s[1]||{})[e[++o]]=l:i===6?s[1][e[++o]]+=l+"":i?(r=t.apply(l,Vt(t,l,n,["",null])),s.push(r),l[0]?e[0]|=2:(e[o-2]=0,e[o]=r)):s.push(l)}return s},Gt=new Map;function Zt(t){var e=Gt.get(this);return e||(e=new Map,Gt.set(this,e)),(e=Vt(this,e.get(t)||(e.set(t,e=(function(n){for(var s,r,o=1,i="",l="",p=[0],c=function(a){o===1&&(a||(i=i.replace(/^\s*\n\s*|\s*\n\s*$/g,"")))?p.push(0,a,i):o===3&&(a||i)?(p.push(3,a,i),o=2):o===2&&i==="..."&&a?p.push(4,a,0):o===2&&i&&!a?p.push(5,0,!0,i):o>=5&&((i||!a&&o===5)&&(p.push(o,0,i,r),o=6),a&&(p.push(o,a,0,r),o=6)),i=""},d=0;d<n.length;d++){d&&(o===1&&c(),c(d));for(var f=0;f<n[d].length;f++)s=n[d][f],o===1?s==="<"?(c(),p=[p],o=3):i+=s:o===4?i==="--"&&s===">"?(o=1,i=""):i=s+i[0]:l?s===l?l="":i+=s:s==='"'||s==="'"?l=s:s===">"?(c(),o=1):o&&(s==="="?(o=5,r=i,i=""):s==="/"&&(o<5||n[d][f+1]===">")?(c(),o===3&&(p=p[0]),o=p,(p=p[0]).push(2,0,o),o=0):s===" "||s==="	"||s===`
`||s==="\r"?(c(),o=2):i+=s),o===3&&i==="!--"&&(o=4,p=p[0])}return c(),p})(t)),e),arguments,[])).length>1?e:e[0]}var u=Zt.bind(st);var W,y,kt,Yt,it=0,re=[],v=g,Qt=v.__b,Xt=v.__r,te=v.diffed,ee=v.__c,ne=v.unmount,oe=v.__;function wt(t,e){v.__h&&v.__h(y,t,it||e),it=0;var n=y.__H||(y.__H={__:[],__h:[]});return t>=n.__.length&&n.__.push({}),n.__[t]}function h(t){return it=1,Ee(ie,t)}function Ee(t,e,n){var s=wt(W++,2);if(s.t=t,!s.__c&&(s.__=[n?n(e):ie(void 0,e),function(l){var p=s.__N?s.__N[0]:s.__[0],c=s.t(p,l);p!==c&&(s.__N=[c,s.__[1]],s.__c.setState({}))}],s.__c=y,!y.__f)){var r=function(l,p,c){if(!s.__c.__H)return!0;var d=!1,f=s.__c.props!==l;if(s.__c.__H.__.some(function(_){if(_.__N){d=!0;var $=_.__[0];_.__=_.__N,_.__N=void 0,$!==_.__[0]&&(f=!0)}}),o){var a=o.call(this,l,p,c);return d?a||f:a}return!d||f};y.__f=!0;var o=y.shouldComponentUpdate,i=y.componentWillUpdate;y.componentWillUpdate=function(l,p,c){if(this.__e){var d=o;o=void 0,r(l,p,c),o=d}i&&i.call(this,l,p,c)},y.shouldComponentUpdate=r}return s.__N||s.__}function A(t,e){var n=wt(W++,3);!v.__s&&ae(n.__H,e)&&(n.__=t,n.u=e,y.__H.__h.push(n))}function O(t){return it=5,Pe(function(){return{current:t}},[])}function Pe(t,e){var n=wt(W++,7);return ae(n.__H,e)&&(n.__=t(),n.__H=e,n.__h=t),n.__}function Ne(){for(var t;t=re.shift();){var e=t.__H;if(t.__P&&e)try{e.__h.some(at),e.__h.some(St),e.__h=[]}catch(n){e.__h=[],v.__e(n,t.__v)}}}v.__b=function(t){y=null,Qt&&Qt(t)},v.__=function(t,e){t&&e.__k&&e.__k.__m&&(t.__m=e.__k.__m),oe&&oe(t,e)},v.__r=function(t){Xt&&Xt(t),W=0;var e=(y=t.__c).__H;e&&(kt===y?(e.__h=[],y.__h=[],e.__.some(function(n){n.__N&&(n.__=n.__N),n.u=n.__N=void 0})):(e.__h.some(at),e.__h.some(St),e.__h=[],W=0)),kt=y},v.diffed=function(t){te&&te(t);var e=t.__c;e&&e.__H&&(e.__H.__h.length&&(re.push(e)!==1&&Yt===v.requestAnimationFrame||((Yt=v.requestAnimationFrame)||Re)(Ne)),e.__H.__.some(function(n){n.u&&(n.__H=n.u,n.u=void 0)})),kt=y=null},v.__c=function(t,e){e.some(function(n){try{n.__h.some(at),n.__h=n.__h.filter(function(s){return!s.__||St(s)})}catch(s){e.some(function(r){r.__h&&(r.__h=[])}),e=[],v.__e(s,n.__v)}}),ee&&ee(t,e)},v.unmount=function(t){ne&&ne(t);var e,n=t.__c;n&&n.__H&&(n.__H.__.some(function(s){try{at(s)}catch(r){e=r}}),n.__H=void 0,e&&v.__e(e,n.__v))};var se=typeof requestAnimationFrame=="function";function Re(t){var e,n=function(){clearTimeout(s),se&&cancelAnimationFrame(e),setTimeout(t)},s=setTimeout(n,35);se&&(e=requestAnimationFrame(n))}function at(t){var e=y,n=t.__c;typeof n=="function"&&(t.__c=void 0,n()),y=e}function St(t){var e=y;t.__c=t.__(),y=e}function ae(t,e){return!t||t.length!==e.length||e.some(function(n,s){return n!==t[s]})}function ie(t,e){return typeof e=="function"?e(t):e}var xt="titus.token";function Tt(){try{return sessionStorage.getItem(xt)||""}catch{return""}}function le(t){try{t?sessionStorage.setItem(xt,t):sessionStorage.removeItem(xt)}catch{}}var De=()=>new URL("../api/v3/",document.baseURI),lt=class extends Error{constructor(e,n,s,r){super(n&&typeof n.message=="string"&&n.message||s||`the API answered ${e}`),this.name="ApiError",this.status=e,this.code=n&&n.error||"",this.details=n&&Array.isArray(n.details)&&n.details||[],this.retryAfterSecs=r}};async function w(t,{method:e="GET",query:n,body:s,signal:r,token:o}={}){let i=new URL(t,De());for(let[a,_]of Object.entries(n||{}))_==null||_===""||(Array.isArray(_)?_.length&&i.searchParams.set(a,_.join(",")):i.searchParams.set(a,String(_)));let l={accept:"application/json"},p=o===void 0?Tt():o;p&&(l.authorization=`Bearer ${p}`),s!==void 0&&(l["content-type"]="application/json");let c;try{c=await fetch(i,{method:e,headers:l,body:s===void 0?void 0:JSON.stringify(s),signal:r,credentials:"same-origin",cache:"no-store"})}catch(a){throw a&&a.name==="AbortError"?a:new lt(0,null,`the API did not answer (${a&&a.message})`)}let d=await c.text(),f=null;try{f=d?JSON.parse(d):null}catch{f=null}if(!c.ok){let a=Number(c.headers.get("retry-after"));throw new lt(c.status,f,d.slice(0,500),Number.isFinite(a)&&a>0?a:void 0)}return f}async function ce(t,e,{signal:n,max:s=1e3}={}){let r=[],o;for(;;){let i=await w(t,{query:{...e,pageSize:1e3,cursor:o},signal:n});if(r.push(...i.items),!i.pagination.hasMore||!i.pagination.cursor||r.length>=s)return{items:r,truncated:i.pagination.hasMore};o=i.pagination.cursor}}var Ue={0:"The API did not answer",400:"Invalid request (400)",401:"Not authenticated (401)",403:"Not allowed (403)",404:"Not found (404)",409:"Conflict (409)",413:"Request too large (413)",429:"Rate limited (429)",503:"The API is unavailable (503)"},Le={401:"Set a bearer token in the identity box at the top of the page.",403:"Only the job’s creator or an admin may change it."};function x({error:t,action:e}){if(!t)return null;let n=t.status??-1,s=Ue[n]||(n>=500?`Server error (${n})`:`Error${n>0?` (${n})`:""}`),r=Le[n];return u`<div class="notice error" role="alert" data-status=${n}>
    <p><strong>${e?`${e} failed: `:""}${s}</strong>${t.code?u` <code>${t.code}</code>`:null}</p>
    <p class="message">${t.message}</p>
    ${t.details&&t.details.length?u`<ul class="details">
          ${t.details.map(o=>u`<li><code>${o.field}</code>: ${o.message}</li>`)}
        </ul>`:null}
    ${t.retryAfterSecs?u`<p>Retry after ${t.retryAfterSecs} s.</p>`:null}
    ${r?u`<p class="hint">${r}</p>`:null}
  </div>`}function Ct({text:t}){return t?u`<div class="notice ok" role="status">${t}</div>`:null}function P(t,e,n){let[s,r]=h({value:void 0,error:null,loading:!0,at:0}),[o,i]=h(0),l=O(t);return l.current=t,A(()=>{let p=new AbortController,c,d=!1,f=async()=>{try{let a=await l.current(p.signal);if(d)return;r({value:a,error:null,loading:!1,at:Date.now()})}catch(a){if(d||a&&a.name==="AbortError")return;r(_=>({..._,error:a,loading:!1}))}!d&&n&&(c=setTimeout(f,n))};return r(a=>({...a,loading:!0})),f(),()=>{d=!0,clearTimeout(c),p.abort()}},[...e,o]),{...s,reload:()=>i(p=>p+1)}}function ct({label:t,question:e,onKill:n,disabled:s,children:r}){let[o,i]=h("idle"),[l,p]=h(null),[c,d]=h(""),f=async()=>{i("busy"),p(null);try{d(await n())}catch(a){p(a)}i("idle")};return u`<div class="kill">
    ${o==="idle"?u`<button type="button" class="danger" disabled=${s} onClick=${()=>{d(""),p(null),i("confirm")}}>${t}</button>`:null}
    ${o==="confirm"?u`<div class="confirm" role="group" aria-label=${`Confirm: ${t}`}>
          <p>${e}</p>
          ${r}
          <button type="button" class="danger" onClick=${f}>Yes, ${t.toLowerCase()}</button>
          <button type="button" onClick=${()=>i("idle")}>Cancel</button>
        </div>`:null}
    ${o==="busy"?u`<p role="status">Sending the kill\u2026</p>`:null}
    <${x} error=${l} action=${t} />
    <${Ct} text=${c} />
  </div>`}var N=({state:t,reason:e})=>u`<span class=${`state state-${String(t||"").toLowerCase()}`} data-state=${t}>${t}</span>${e?u` <span class="reason">(${e})</span>`:null}`,T=({children:t})=>u`<code class="id">${t}</code>`,R=({what:t})=>u`<p role="status" class="loading">Loading ${t}\u2026</p>`,D=({at:t,error:e})=>t?u`<p class="freshness">Updated ${new Date(t).toLocaleTimeString()}${e?" (the last refresh failed)":""}</p>`:null;function C(t){if(t==null||t===0)return"—";let e=new Date(t);return Number.isNaN(e.getTime())?"—":e.toISOString().replace("T"," ").replace(/\.\d+Z$/,"Z")}function ue(t,e=Date.now()){if(!t)return"—";let n=Math.max(0,Math.round((e-t)/1e3));return n<120?`${n} s ago`:n<7200?`${Math.round(n/60)} min ago`:n<172800?`${Math.round(n/3600)} h ago`:`${Math.round(n/86400)} days ago`}var ut=t=>`${(Number(t||0)/1e3).toFixed(2).replace(/\.?0+$/,"")||"0"}`,dt=t=>t.jobDescriptor&&t.jobDescriptor.batch?"batch":"service";function de(t){let e=t.container&&t.container.image||{};return e.digest?`${e.name}@${e.digest}`:`${e.name}:${e.tag||"latest"}`}function pe(t){let e=t.container||{},n=[...e.entryPoint||[],...e.command||[]];return n.length?n.map(Oe).join(" "):"(the image default)"}function Oe(t){return/^[A-Za-z0-9_./:=@%+-]+$/.test(t)?t:`'${t.replace(/'/g,"'\\''")}'`}function _e(t){let e=t.jobDescriptor||{};if(e.batch){let s=e.batch.size||1;return`${s} task${s===1?"":"s"}`}let n=e.service&&e.service.capacity||{};return`desired ${n.desired??0} (min ${n.min??0}, max ${n.max??0})`}var Fe=["Accepted","Launched","StartInitiated","Started","KillInitiated","Finished"];function fe(t){let e=new Map;for(let n of t)e.set(n.status.state,(e.get(n.status.state)||0)+1);return Fe.filter(n=>e.has(n)).map(n=>`${e.get(n)} ${n}`).join(", ")}var He=3e3;function me(){let t=P(n=>w("agents",{signal:n}),[],He),e=t.value&&t.value.items||[];return u`<section aria-labelledby="agents-title">
    <h1 id="agents-title">Agents</h1>
    <${x} error=${t.error} action="Listing agents" />
    ${t.value===void 0&&t.loading?u`<${R} what="agents" />`:null}
    ${t.value?u`<${ze} agents=${e} />`:null}
    ${t.value&&!e.length?u`<p class="empty">No agent has registered.</p>`:null}
    ${e.length?u`<table class="agents">
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">State</th>
              <th scope="col">Zone</th>
              <th scope="col">Machine</th>
              <th scope="col">CPU (cores)</th>
              <th scope="col">Memory (MB)</th>
              <th scope="col">Disk (MB)</th>
              <th scope="col">Network (Mbps)</th>
              <th scope="col">Tasks</th>
              <th scope="col">Heartbeat</th>
            </tr>
          </thead>
          <tbody>
            ${e.map(n=>u`<tr key=${n.id} data-agent-id=${n.id}>
                <td><${T}>${n.id}<//><br /><span class="reason">incarnation ${n.incarnation??1}</span></td>
                <td><span class=${`state agent-${n.state}`}>${n.state}</span></td>
                <td>${n.zone}</td>
                <td>${n.machineType}<br /><span class="reason">${n.machineGroup}</span></td>
                <td class="alloc" data-resource="cpu"><${pt} name="CPU" used=${n.allocated.cpuMillis} of=${n.capacity.cpuMillis} show=${ut} /></td>
                <td class="alloc" data-resource="memory"><${pt} name="Memory" used=${n.allocated.memoryMb} of=${n.capacity.memoryMb} /></td>
                <td class="alloc" data-resource="disk"><${pt} name="Disk" used=${n.allocated.diskMb} of=${n.capacity.diskMb} /></td>
                <td class="alloc" data-resource="network"><${pt} name="Network" used=${n.allocated.networkMbps} of=${n.capacity.networkMbps} /></td>
                <td data-resource="tasks">${n.taskCount}</td>
                <td>${ue(n.heartbeatAtMs)}</td>
              </tr>`)}
          </tbody>
        </table>`:null}
    <${D} at=${t.at} error=${t.error} />
  </section>`}var Be=t=>String(t??0);function pt({name:t,used:e,of:n,show:s=Be}){let r=n?Math.round(100*(e||0)/n):0;return u`<span class="use">${s(e)} of ${s(n)} <span class="reason">(${r}%)</span></span>
    <meter min="0" max=${n||1} value=${e||0} high=${(n||1)*.9} aria-label=${`${t} allocated: ${r}%`}></meter>`}function ze({agents:t}){let e=o=>t.reduce((i,l)=>i+(o(l)||0),0),n=t.filter(o=>o.state==="active").length,s=e(o=>o.taskCount),r=`${t.length} agent${t.length===1?"":"s"} (${n} active): ${ut(e(o=>o.allocated.cpuMillis))} of ${ut(e(o=>o.capacity.cpuMillis))} cores and ${e(o=>o.allocated.memoryMb)} of ${e(o=>o.capacity.memoryMb)} MB memory allocated to ${s} task${s===1?"":"s"}.`;return u`<p id="agent-totals">${r}</p>`}function he(){let t=window.location.hash.replace(/^#/,"")||"/jobs",e=t.indexOf("?"),n=e<0?t:t.slice(0,e),s=new URLSearchParams(e<0?"":t.slice(e+1));return{path:n.replace(/\/+$/,"")||"/jobs",params:s,raw:t}}function Mt(t,e){let n=new URLSearchParams;for(let[r,o]of Object.entries(e||{}))o!=null&&o!==""&&n.set(r,String(o));let s=n.toString();return`#${t}${s?`?${s}`:""}`}function G(t,e){window.location.hash=Mt(t,e)}function $e(){let[t,e]=h(he);return A(()=>{let n=()=>e(he());return window.addEventListener("hashchange",n),()=>window.removeEventListener("hashchange",n)},[]),t}var B=t=>`#/jobs/${encodeURIComponent(t)}`,F=t=>`#/tasks/${encodeURIComponent(t)}`;var be=["JobStateChange","JobCapacityChange","JobAttributesChange","TaskStateChange","PlacementFailure","AgentStateChange"],jt=[["now","now",0],["10m","the last 10 minutes",10*6e4],["1h","the last hour",36e5],["1d","the last day",864e5]],Je=2e4,Ke=500;function qe(t){let e=(t.get("types")||"").split(",").filter(s=>be.includes(s)),n=t.get("since")||"10m";return{jobId:(t.get("jobId")||"").trim(),types:e,since:jt.some(([s])=>s===n)?n:"10m"}}function ge({params:t}){let e=qe(t),[n,s]=h(!1),r=Ge(e,n);return u`<section aria-labelledby="events-title">
    <h1 id="events-title">Events</h1>
    <${Ye} filters=${e} />
    <p class="feed-status" role="status" id="feed-status">${r.status}</p>
    <button type="button" onClick=${()=>s(!n)}>${n?"Resume the feed":"Pause the feed"}</button>
    <${x} error=${r.error} action="Reading the event feed" />
    ${r.events.length?u`<table class="events">
          <caption class="visually-hidden">Events, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Type</th>
              <th scope="col">Job</th>
              <th scope="col">Task</th>
              <th scope="col">State</th>
              <th scope="col">Reason</th>
              <th scope="col">Agent</th>
              <th scope="col">Detail</th>
            </tr>
          </thead>
          <tbody>
            ${r.events.map(o=>u`<tr key=${o.id} data-event-type=${o.type} data-job-id=${o.jobId||""}>
                <td>${C(o.timestampMs)}</td>
                <td>${o.type}</td>
                <td>${o.jobId?u`<a href=${B(o.jobId)}><code class="id">${o.jobId}</code></a>`:""}</td>
                <td>${o.taskId?u`<a href=${F(o.taskId)}><code class="id">${o.taskId}</code></a>`:""}</td>
                <td>${o.state?u`<span class=${`state state-${o.state.toLowerCase()}`} data-state=${o.state}>${o.state}</span>`:""}</td>
                <td>${o.reasonCode||""}</td>
                <td>${o.agentId||""}</td>
                <td>${We(o)}</td>
              </tr>`)}
          </tbody>
        </table>`:u`<p class="empty">No events yet${e.since==="now"?" since the feed was opened":""}.</p>`}
  </section>`}function We(t){return t.capacity?`capacity min ${t.capacity.min??0}, desired ${t.capacity.desired}, max ${t.capacity.max}`:t.placement?`${t.placement.unplacedTasks} unplaced: ${t.placement.reasons.join("; ")}`:t.attributes?Object.entries(t.attributes).map(([e,n])=>`${e}=${n}`).join(", "):t.reasonMessage||""}function Ge(t,e){let[n,s]=h({events:[],status:"Connecting…",error:null}),r=O(null),o=O(Date.now());return A(()=>{if(e){s(d=>({...d,status:"Paused; resuming goes on from where the feed stopped."}));return}let i=new AbortController,l=!1,p=jt.find(([d])=>d===t.since)[2],c=o.current-p;return(async()=>{let d=1e3;for(;!l;)try{let f=await w("events",{signal:i.signal,query:{jobId:t.jobId,types:t.types,limit:200,waitMs:Je,...r.current?{cursor:r.current}:{sinceMs:c}}});if(l)return;r.current=f.cursor,d=1e3,s(a=>({events:Ve(f.events,a.events),status:`Live: following the feed${t.jobId?` of job ${t.jobId}`:""} (last answer ${new Date().toLocaleTimeString()}).`,error:null}))}catch(f){if(l||f&&f.name==="AbortError")return;let a=[400,401,403,404].includes(f.status);if(s(_=>({..._,error:f,status:a?"Stopped: fix the problem below, then apply the filters again.":`Retrying in ${Math.round(d/1e3)} s…`})),a)return;await Ze(f.retryAfterSecs?f.retryAfterSecs*1e3:d,i.signal),d=Math.min(d*2,15e3)}})(),()=>{l=!0,i.abort()}},[e]),n}function Ve(t,e){let n=new Set(e.map(r=>r.id)),s=t.filter(r=>!n.has(r.id)&&n.add(r.id));return s.length?[...s.reverse(),...e].slice(0,Ke):e}function Ze(t,e){return new Promise(n=>{let s=setTimeout(n,t);e.addEventListener("abort",()=>{clearTimeout(s),n()})})}function Ye({filters:t}){let[e,n]=h({...t}),s=o=>{o.preventDefault(),G("/events",{jobId:e.jobId.trim(),types:e.types.join(","),since:e.since==="10m"?"":e.since})},r=o=>i=>n({...e,types:i.currentTarget.checked?[...e.types,o]:e.types.filter(l=>l!==o)});return u`<form class="filters" onSubmit=${s} aria-label="Filter events">
    <label>Job ID
      <input name="jobId" type="text" size="38" value=${e.jobId} onInput=${o=>n({...e,jobId:o.currentTarget.value})} />
    </label>
    <fieldset>
      <legend>Types (none checked: all)</legend>
      ${be.map(o=>u`<label class="inline"><input type="checkbox" name="types" value=${o} checked=${e.types.includes(o)} onChange=${r(o)} /> ${o}</label>`)}
    </fieldset>
    <label>Starting from
      <select name="since" value=${e.since} onChange=${o=>n({...e,since:o.currentTarget.value})}>
        ${jt.map(([o,i])=>u`<option value=${o}>${i}</option>`)}
      </select>
    </label>
    <button type="submit">Apply filters</button>
  </form>`}var Qe=2e3;function ye({id:t}){let[e,n]=h(null),s=P(async c=>{let d=await w(`tasks/${encodeURIComponent(t)}`,{signal:c}),f=await w(`jobs/${encodeURIComponent(d.jobId)}`,{signal:c}).catch(_=>_&&_.name==="AbortError"?Promise.reject(_):null),a=e;return(d.status.state==="Accepted"||a===null)&&(a=await w(`scheduler/results/${encodeURIComponent(t)}`,{signal:c}).catch(_=>_&&_.name==="AbortError"?Promise.reject(_):{error:_}),d.status.state!=="Accepted"&&n(a)),{task:d,job:f,placement:a}},[t],Qe);if(s.value===void 0)return u`<section aria-labelledby="task-title">
      <h1 id="task-title">Task <${T}>${t}<//></h1>
      <${x} error=${s.error} action="Reading the task" />
      ${s.loading?u`<${R} what="the task" />`:null}
    </section>`;let{task:r,job:o,placement:i}=s.value,l=r.status.state==="Finished",p=o&&o.jobDescriptor.service;return u`<section aria-labelledby="task-title">
    <h1 id="task-title">Task <${T}>${r.id}<//></h1>
    <${x} error=${s.error} action="Refreshing the task" />
    <${D} at=${s.at} error=${s.error} />
    <div class="columns">
      <section aria-labelledby="task-summary-title">
        <h2 id="task-summary-title">Summary</h2>
        <dl class="summary">
          <dt>Job</dt><dd><a href=${B(r.jobId)}><${T}>${r.jobId}<//></a>${o?` (${o.jobDescriptor.applicationName})`:""}</dd>
          <dt>Index</dt><dd>${r.index}</dd>
          <dt>State</dt>
          <dd id="task-state"><${N} state=${r.status.state} reason=${r.status.reasonCode} />${r.status.reasonMessage?u` — ${r.status.reasonMessage}`:null}</dd>
          <dt>Agent</dt><dd>${r.agentId?`${r.agentId} (incarnation ${r.agentIncarnation})`:"not placed"}</dd>
          <dt>Resources</dt><dd>${tn(r.resources)}</dd>
          <dt>Created</dt><dd>${C(r.createdAtMs)}</dd>
          <dt>Started</dt><dd>${C(r.startedAtMs)}</dd>
          ${r.notBeforeMs?u`<dt>Not placed before</dt><dd>${C(r.notBeforeMs)} (a retry delay)</dd>`:null}
          ${r.exitCode!==void 0&&r.exitCode!==null?u`<dt>Exit code</dt><dd>${r.exitCode}${r.oomKilled?" (killed: out of memory)":""}</dd>`:null}
          <dt>Original task</dt><dd>${r.originalId===r.id?"this one":u`<a href=${F(r.originalId)}><${T}>${r.originalId}<//></a>`}</dd>
          ${r.resubmitOf?u`<dt>Replaces</dt><dd><a href=${F(r.resubmitOf)}><${T}>${r.resubmitOf}<//></a> (resubmit ${r.resubmitNumber}, ${r.systemResubmitNumber||0} after system errors)</dd>`:null}
        </dl>
      </section>
      <section aria-labelledby="task-kill-title">
        <h2 id="task-kill-title">Kill</h2>
        <${en} task=${r} service=${!!p} finished=${l} onDone=${s.reload} />
      </section>
    </div>
    <section aria-labelledby="placement-title">
      <h2 id="placement-title">${r.status.state==="Accepted"?"Why it waits":"Placement"}</h2>
      <${At} result=${i} />
    </section>
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">Output</h2>
      <${rn} id=${r.id} started=${!!r.agentId} />
    </section>
    <section aria-labelledby="history-title">
      <h2 id="history-title">Status history</h2>
      <table class="history">
        <thead>
          <tr><th scope="col">State</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Time</th></tr>
        </thead>
        <tbody>
          ${Xe(r).map((c,d)=>u`<tr key=${d}>
              <td><${N} state=${c.state} /></td>
              <td>${c.reasonCode||""}</td>
              <td>${c.reasonMessage||""}</td>
              <td>${C(c.timestampMs)}</td>
            </tr>`)}
        </tbody>
      </table>
    </section>
  </section>`}function Xe(t){let e=[...t.statusHistory||[]],n=e[e.length-1];return(!n||n.state!==t.status.state||n.timestampMs!==t.status.timestampMs)&&e.push(t.status),e}function tn(t={}){return`${t.cpu??1} CPU, ${t.memoryMB??512} MB memory, ${t.diskMB??1e4} MB disk, ${t.networkMbps??128} Mbps${t.gpu?`, ${t.gpu} GPU`:""}`}function en({task:t,service:e,finished:n,onDone:s}){let[r,o]=h(!1);return u`<${ct}
    label="Kill task"
    disabled=${n}
    question=${`Kill task ${t.id}?${e&&!r?" The service replaces it unless you shrink the job.":""}`}
    onKill=${async()=>{let i=await w(`tasks/${encodeURIComponent(t.id)}`,{method:"DELETE",query:{shrink:r?"true":""}});return s(),`Kill requested: the task is ${i.status.state}.`}}
  >
    ${e?u`<label class="inline"><input type="checkbox" checked=${r} onChange=${i=>o(i.currentTarget.checked)} /> Shrink: lower the job's desired capacity by one instead of replacing the task</label>`:null}
  <//>`}function At({result:t}){if(!t)return u`<p class="loading">Asking the scheduler\u2026</p>`;if(t.error)return t.error.status===404?u`<p class="empty">The scheduler has nothing on record for it (it finished without being placed, or its record is gone).</p>`:u`<${x} error=${t.error} action="Reading the scheduler's result" />`;if(t.success)return u`<p class="placement-success">${t.success.message}</p>`;let e=t.failures&&t.failures.failures||[];return e.length?u`<div class="placement-failures">
    <p>
      ${t.unplacedTasks??"?"} task${t.unplacedTasks===1?"":"s"} could not be placed
      since ${C(t.sinceMs)} (last confirmed ${C(t.computedAtMs)}${t.stale?", stale: the scheduler has not confirmed it for three minutes":""}).
    </p>
    ${t.insufficient&&t.insufficient.length?u`<p>More capacity needed in: ${t.insufficient.join(", ")}.</p>`:null}
    <table>
      <thead><tr><th scope="col">Reason</th><th scope="col">Agents rejected</th></tr></thead>
      <tbody>
        ${e.map((n,s)=>u`<tr key=${s}><td>${n.reason}</td><td>${n.failureCount}</td></tr>`)}
      </tbody>
    </table>
  </div>`:u`<p class="placement-message">${t.message||"The scheduler has not tried to place it yet."}</p>`}var nn=200,on=2e3,sn=2e3;function rn({id:t,started:e}){let[n,s]=h({lines:[],error:null,done:!1,location:null}),r=O(null);if(A(()=>{if(!e)return;let i=new AbortController,l,p=!1;r.current=null,s({lines:[],error:null,done:!1,location:null});let c=async()=>{let d=!1;try{let f=r.current?{cursor:r.current}:{tail:nn},a=await w(`tasks/${encodeURIComponent(t)}/logs`,{query:f,signal:i.signal});if(p)return;a.cursor&&(r.current=a.cursor),d=a.taskFinished&&a.lines.length===0&&!!a.cursor,s(_=>({lines:[..._.lines,...a.lines].slice(-on),error:null,done:d,location:a.location}))}catch(f){if(p||f&&f.name==="AbortError")return;s(a=>({...a,error:f}))}!p&&!d&&(l=setTimeout(c,sn))};return c(),()=>{p=!0,clearTimeout(l),i.abort()}},[t,e]),!e)return u`<p class="empty">No output: the task has not been placed.</p>`;let o=n.error&&n.error.status===404;return u`<div class="task-logs">
    ${o?u`<p class="empty" id="task-logs-missing">${n.error.message}</p>`:u`<${x} error=${n.error} action="Reading the task's output" />`}
    ${n.location?u`<p class="log-location">CloudWatch Logs: group <${T}>${n.location.group}<//>, stream <${T}>${n.location.stream}<//>${n.done?" (the task has finished)":" (following)"}</p>`:null}
    ${n.lines.length?u`<pre id="task-logs" aria-label="task output">${n.lines.map(i=>`${new Date(i.timestampMs).toISOString()} ${i.message}
`).join("")}</pre>`:o||n.error?null:u`<p class="empty">No output yet.</p>`}
  </div>`}var an=2e3;function ve({id:t}){let e=P(async l=>{let[p,c]=await Promise.all([w(`jobs/${encodeURIComponent(t)}`,{signal:l}),ce("tasks",{jobId:t},{signal:l})]),d=c.items.some(a=>a.status.state==="Accepted"),f=null;return d&&p.status.state==="Accepted"&&(f=await w(`scheduler/results/${encodeURIComponent(t)}`,{signal:l}).catch(a=>a&&a.name==="AbortError"?Promise.reject(a):{error:a})),{job:p,tasks:c,placement:f}},[t],an);if(e.value===void 0)return u`<section aria-labelledby="job-title">
      <h1 id="job-title">Job <${T}>${t}<//></h1>
      <${x} error=${e.error} action="Reading the job" />
      ${e.loading?u`<${R} what="the job" />`:null}
    </section>`;let{job:n,tasks:s,placement:r}=e.value,o=n.jobDescriptor,i=n.status.state==="Finished";return u`<section aria-labelledby="job-title">
    <h1 id="job-title">Job <${T}>${n.id}<//></h1>
    <${x} error=${e.error} action="Refreshing the job" />
    <${D} at=${e.at} error=${e.error} />
    <p><a href=${Mt("/events",{jobId:n.id,since:"1d"})}>This job's events</a></p>
    <div class="columns">
      <section aria-labelledby="summary-title">
        <h2 id="summary-title">Descriptor</h2>
        <dl class="summary">
          <dt>Application</dt><dd>${o.applicationName}</dd>
          <dt>Owner</dt><dd>${o.owner.teamEmail}</dd>
          <dt>Type</dt><dd>${dt(n)}</dd>
          <dt>State</dt>
          <dd id="job-state"><${N} state=${n.status.state} reason=${n.status.reasonCode} />${n.status.reasonMessage?u` — ${n.status.reasonMessage}`:null}</dd>
          <dt>Created by</dt><dd>${n.createdBy}</dd>
          <dt>Created</dt><dd>${C(n.createdAtMs)}</dd>
          <dt>Image</dt><dd><code>${de(o)}</code></dd>
          <dt>Command</dt><dd><code>${pe(o)}</code></dd>
          <dt>Resources</dt><dd>${ln(o.container.resources)}</dd>
          <dt>Capacity group</dt><dd>${o.capacityGroup||"DEFAULT"}</dd>
          ${Object.keys(o.attributes||{}).length?u`<dt>Attributes</dt><dd>${Object.entries(o.attributes).map(([l,p])=>u`<code>${l}=${p}</code> `)}</dd>`:null}
        </dl>
      </section>
      <section aria-labelledby="capacity-title">
        <h2 id="capacity-title">Capacity</h2>
        <${cn} job=${n} />
        ${o.service&&!i?u`<${un} job=${n} onDone=${e.reload} />`:null}
        <h2>Kill</h2>
        <${ct}
          label="Kill job"
          disabled=${i}
          question=${`Kill job ${n.id}? Each task gets SIGTERM, then SIGKILL after its grace period.`}
          onKill=${async()=>{let l=await w(`jobs/${encodeURIComponent(n.id)}`,{method:"DELETE"});return e.reload(),`Kill requested: the job is ${l.status.state}.`}}
        />
      </section>
    </div>
    ${r?u`<section aria-labelledby="placement-title">
      <h2 id="placement-title">Why tasks wait</h2>
      <${At} result=${r} />
    </section>`:null}
    <section aria-labelledby="tasks-title">
      <h2 id="tasks-title">Tasks</h2>
      <p id="task-counts">${s.items.length} task${s.items.length===1?"":"s"}${s.items.length?`: ${fe(s.items)}`:""}${s.truncated?" (the first 1000 shown)":""}</p>
      <${dn} tasks=${s.items} />
    </section>
  </section>`}function ln(t={}){let e=[`${t.cpu??1} CPU`,`${t.memoryMB??512} MB memory`,`${t.diskMB??1e4} MB disk`,`${t.networkMbps??128} Mbps`];return t.gpu&&e.push(`${t.gpu} GPU`),e.join(", ")}function cn({job:t}){let e=t.jobDescriptor;if(e.batch){let r=e.batch;return u`<dl class="summary">
      <dt>Batch size</dt><dd>${r.size??1}</dd>
      <dt>Runtime limit</dt><dd>${r.runtimeLimitSec?`${r.runtimeLimitSec} s`:"the default (5 days)"}</dd>
      <dt>Retry policy</dt><dd><code>${JSON.stringify(r.retryPolicy||{})}</code></dd>
    </dl>`}let n=e.service,s=n.capacity;return u`<dl class="summary" id="capacity">
    <dt>Min</dt><dd>${s.min??0}</dd>
    <dt>Desired</dt><dd id="capacity-desired">${s.desired}</dd>
    <dt>Max</dt><dd>${s.max}</dd>
    <dt>Enabled</dt><dd>${n.enabled===!1?"no":"yes"}</dd>
  </dl>`}function un({job:t,onDone:e}){let n=t.jobDescriptor.service.capacity,[s,r]=h({min:"",desired:String(n.desired),max:""}),[o,i]=h(null),[l,p]=h(""),[c,d]=h(!1),f=_=>$=>r({...s,[_]:$.currentTarget.value});return u`<form class="scale" onSubmit=${async _=>{_.preventDefault(),i(null),p("");let $={};for(let k of["min","desired","max"]){let b=s[k].trim();b!==""&&($[k]=Number.isFinite(Number(b))?Number(b):b)}d(!0);try{let b=(await w(`jobs/${encodeURIComponent(t.id)}/instances`,{method:"PUT",body:$})).jobDescriptor.service.capacity;p(`Capacity is now min ${b.min??0}, desired ${b.desired}, max ${b.max}.`),e()}catch(k){i(k)}d(!1)}} aria-label="Scale the job">
    <h3>Scale</h3>
    <p class="hint">Empty fields keep their current value.</p>
    <label>Min <input name="min" inputmode="numeric" placeholder=${String(n.min??0)} value=${s.min} onInput=${f("min")} /></label>
    <label>Desired <input name="desired" inputmode="numeric" value=${s.desired} onInput=${f("desired")} /></label>
    <label>Max <input name="max" inputmode="numeric" placeholder=${String(n.max)} value=${s.max} onInput=${f("max")} /></label>
    <button type="submit" disabled=${c}>Scale</button>
    <${x} error=${o} action="Scaling" />
    <${Ct} text=${l} />
  </form>`}function dn({tasks:t}){return t.length?u`<table class="tasks">
    <thead>
      <tr>
        <th scope="col">Task</th>
        <th scope="col">Index</th>
        <th scope="col">State</th>
        <th scope="col">Agent</th>
        <th scope="col">Started</th>
        <th scope="col">Last change</th>
        <th scope="col">Message</th>
      </tr>
    </thead>
    <tbody>
      ${t.map(e=>u`<tr key=${e.id} data-task-id=${e.id}>
          <td><a href=${F(e.id)}><${T}>${e.id}<//></a>${e.resubmitNumber?u` <span class="reason">(resubmit ${e.resubmitNumber})</span>`:null}</td>
          <td>${e.index}</td>
          <td><${N} state=${e.status.state} reason=${e.status.reasonCode} /></td>
          <td>${e.agentId||"—"}</td>
          <td>${C(e.startedAtMs)}</td>
          <td>${C(e.status.timestampMs)}</td>
          <td>${e.status.reasonMessage||""}</td>
        </tr>`)}
    </tbody>
  </table>`:u`<p class="empty">No tasks yet: the scheduler writes a new job's tasks on its next tick.</p>`}var pn=["Accepted","KillInitiated","Finished"],It=[25,50,100,200];function _n(t){return{state:t.get("state")||"",owner:t.get("owner")||"",app:t.get("app")||"",type:t.get("type")||"",pageSize:Math.min(1e3,Math.max(1,Number(t.get("pageSize"))||25))}}function ke({params:t}){let e=_n(t),n=JSON.stringify(e),[s,r]=h({key:n,cursors:[void 0],index:0}),o=s.key===n?s:{key:n,cursors:[void 0],index:0},i=o.cursors[o.index],l=P(f=>w("jobs",{signal:f,query:{jobState:e.state,owner:e.owner,applicationName:e.app,jobType:e.type,pageSize:e.pageSize,cursor:i}}),[n,i],5e3),p=()=>{let f=l.value&&l.value.pagination.cursor;if(!f)return;let a=o.cursors.slice(0,o.index+1);a.push(f),r({key:n,cursors:a,index:o.index+1})},c=()=>r({...o,index:Math.max(0,o.index-1)}),d=()=>r({key:n,cursors:[void 0],index:0});return u`<section aria-labelledby="jobs-title">
    <h1 id="jobs-title">Jobs</h1>
    <${fn} filters=${e} />
    <${x} error=${l.error} action="Listing jobs" />
    ${l.value===void 0&&l.loading?u`<${R} what="jobs" />`:null}
    ${l.value?u`<${mn} jobs=${l.value.items} />
          <nav class="pager" aria-label="Pages of jobs">
            <button type="button" onClick=${d} disabled=${o.index===0}>First page</button>
            <button type="button" onClick=${c} disabled=${o.index===0}>Previous page</button>
            <span>Page ${o.index+1}</span>
            <button type="button" onClick=${p} disabled=${!l.value.pagination.hasMore}>Next page</button>
          </nav>
          <${D} at=${l.at} error=${l.error} />`:null}
  </section>`}function fn({filters:t}){let[e,n]=h(t),s=i=>l=>n({...e,[i]:l.currentTarget.value}),r=i=>{i.preventDefault(),G("/jobs",{...e,pageSize:e.pageSize===25?"":e.pageSize})},o=()=>{n({state:"",owner:"",app:"",type:"",pageSize:25}),G("/jobs")};return u`<form class="filters" onSubmit=${r} aria-label="Filter jobs">
    <label>State
      <select name="state" value=${e.state} onChange=${s("state")}>
        <option value="">any</option>
        ${pn.map(i=>u`<option value=${i}>${i}</option>`)}
      </select>
    </label>
    <label>Owner (team email)
      <input name="owner" type="text" value=${e.owner} onInput=${s("owner")} />
    </label>
    <label>Application
      <input name="app" type="text" value=${e.app} onInput=${s("app")} />
    </label>
    <label>Type
      <select name="type" value=${e.type} onChange=${s("type")}>
        <option value="">any</option>
        <option value="batch">batch</option>
        <option value="service">service</option>
      </select>
    </label>
    <label>Per page
      <select name="pageSize" value=${String(e.pageSize)} onChange=${i=>n({...e,pageSize:Number(i.currentTarget.value)})}>
        ${(It.includes(e.pageSize)?It:[e.pageSize,...It].sort((i,l)=>i-l)).map(i=>u`<option value=${String(i)}>${i}</option>`)}
      </select>
    </label>
    <button type="submit">Apply filters</button>
    <button type="button" onClick=${o}>Clear filters</button>
  </form>`}function mn({jobs:t}){return t.length?u`<table class="jobs">
    <caption class="visually-hidden">Jobs, newest first</caption>
    <thead>
      <tr>
        <th scope="col">Job</th>
        <th scope="col">Application</th>
        <th scope="col">Type</th>
        <th scope="col">Owner</th>
        <th scope="col">State</th>
        <th scope="col">Size</th>
        <th scope="col">Created by</th>
        <th scope="col">Created</th>
      </tr>
    </thead>
    <tbody>
      ${t.map(e=>u`<tr key=${e.id} data-job-id=${e.id}>
          <td><a href=${B(e.id)}><${T}>${e.id}<//></a></td>
          <td>${e.jobDescriptor.applicationName}</td>
          <td>${dt(e)}</td>
          <td>${e.jobDescriptor.owner.teamEmail}</td>
          <td><${N} state=${e.status.state} reason=${e.status.state==="Accepted"?"":e.status.reasonCode} /></td>
          <td>${_e(e)}</td>
          <td>${e.createdBy}</td>
          <td>${C(e.createdAtMs)}</td>
        </tr>`)}
    </tbody>
  </table>`:u`<p class="empty">No jobs match these filters.</p>`}var Se="([0-9a-fA-F-]{36})",hn=[[/^\/jobs$/,"Jobs","jobs",({params:t})=>u`<${ke} params=${t} />`],[new RegExp(`^/jobs/${Se}$`),"Job","jobs",({match:t})=>u`<${ve} id=${t[1].toLowerCase()} />`],[new RegExp(`^/tasks/${Se}$`),"Task","jobs",({match:t})=>u`<${ye} id=${t[1].toLowerCase()} />`],[/^\/agents$/,"Agents","agents",()=>u`<${me} />`],[/^\/events$/,"Events","events",({params:t})=>u`<${ge} params=${t} />`]];function $n(){let t=$e(),[e,n]=h(Tt),s=hn.map(([r,o,i,l])=>({match:t.path.match(r),title:o,section:i,page:l})).find(r=>r.match);return A(()=>{document.title=`${s?s.title:"Not found"} · Titus`},[s&&s.title]),u`<header class="top">
      <a class="brand" href="#/jobs">Titus</a>
      <nav aria-label="Sections">
        ${[["jobs","#/jobs","Jobs"],["agents","#/agents","Agents"],["events","#/events","Events"]].map(([r,o,i])=>u`<a href=${o} aria-current=${s&&s.section===r?"page":void 0}>${i}</a>`)}
      </nav>
      <${gn}
        token=${e}
        onChange=${r=>{le(r),n(r)}}
      />
    </header>
    <main id="main">
      ${s?u`<${bn} key=${`${t.raw}|${e}`} render=${s.page} match=${s.match} params=${t.params} />`:u`<h1>No such page</h1>
            <p>Nothing lives at <code>#${t.path}</code>. Try the <a href="#/jobs">jobs</a>.</p>`}
    </main>`}var bn=({render:t,match:e,params:n})=>t({match:e,params:n});function gn({token:t,onChange:e}){let[n,s]=h(t);return u`<form class="identity" onSubmit=${o=>{o.preventDefault(),e(n.trim())}} aria-label="Identity">
    <label for="token">Bearer token</label>
    <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" value=${n} onInput=${o=>s(o.currentTarget.value)} />
    <button type="submit">Use token</button>
    <button type="button" disabled=${!t&&!n} onClick=${()=>{s(""),e("")}}>Forget token</button>
    <p class="identity-status" id="identity-status" role="status">
      ${t?"Requests carry this token (kept for this tab only).":"No token: requests go without an Authorization header (for a signing proxy in front)."}
    </p>
  </form>`}vt(u`<${$n} />`,document.getElementById("app"));})();
